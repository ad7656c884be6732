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

    conn = db.connect()
    usage = clusters.usage_report(conn)
    live = {r.name: r for r in clusters.list_clusters(conn)}

    def status(u: clusters.Usage) -> str:
        # The launch's cluster as it is now: UP (billed), STOPPED, or gone for good.
        record = live.get(u.cluster)
        if record is not None and record.handle is not None and record.handle.uid == u.uid:
            return clusters.UP if u.running else record.status
        return clusters.UP if u.running else "TERMINATED"

    if args.output == "json":
        print_json([{**asdict(u), "status": status(u)} for u in usage])
        return 0
    print_table(["NAME", "LAUNCHED", "DURATION", "INFRA", "RESOURCES", "$/h", "COST", "STATUS"],
                [[u.cluster, ago(u.started_at), duration(u.seconds), u.infra,
                  f"{u.num_nodes}x {u.resources}", money(u.hourly_price * u.num_nodes),
                  f"{u.cost:.2f}", status(u)] for u in usage])
    total = sum(u.cost for u in usage)
    print(f"\nTotal: ${total:.2f}")
    return 0
