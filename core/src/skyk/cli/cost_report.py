"""``skyk cost-report``: what each cluster has cost, from local records."""

from __future__ import annotations

from skyk.cli.output import add_output_flag

HELP = "Show the estimated cost of every cluster launched, including torn-down ones."


def configure(parser) -> None:
    """Add this command's arguments."""
    add_output_flag(parser)


def run(args) -> int:
    """Print the table or JSON."""
    from dataclasses import asdict

    from skyk.cli.output import money, print_json, print_table
    from skyk.cli.status import ago, duration
    from skyk.state import clusters, db

    usage = clusters.usage_report(db.connect())
    if args.output == "json":
        print_json([asdict(u) for u in usage])
        return 0
    print_table(["NAME", "LAUNCHED", "DURATION", "INFRA", "RESOURCES", "$/h", "COST", "STATUS"],
                [[u.cluster, ago(u.started_at), duration(u.seconds), u.infra,
                  f"{u.num_nodes}x {u.resources}", money(u.hourly_price * u.num_nodes),
                  f"{u.cost:.2f}", "running" if u.running else "ended"] for u in usage])
    total = sum(u.cost for u in usage)
    print(f"\nTotal: ${total:.2f}")
    return 0
