"""``skyk queue``: the jobs of clusters."""

from __future__ import annotations

from skyk.cli.output import add_output_flag

HELP = "Show the job queue of clusters (all UP clusters by default)."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("clusters", nargs="*", metavar="NAME", help="clusters (default: every UP one)")
    add_output_flag(parser)


def _when(timestamp: float | None) -> str:
    from skyk.cli.status import ago

    return ago(timestamp) if timestamp else "-"


def _duration(job: dict) -> str:
    import time

    if not job.get("started_at"):
        return "-"
    seconds = (job.get("ended_at") or time.time()) - job["started_at"]
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def run(args) -> int:
    """Ask each cluster's agent for its jobs."""
    from skyk.cli.launch import check_cluster_name
    from skyk.lifecycle.lookup import head_client, require_up
    from skyk.state import clusters, db

    conn = db.connect()
    if args.clusters:
        targets = [require_up(conn, check_cluster_name(n, ""))[0] for n in dict.fromkeys(args.clusters)]
    else:
        targets = [r for r in clusters.list_clusters(conn) if r.status == clusters.UP]
    found = {r.name: head_client(r.handle).queue() for r in targets}
    if args.output == "json":
        from skyk.cli.output import print_json

        print_json({name: jobs for name, jobs in found.items()})
        return 0
    from skyk.cli.output import print_table

    for index, (name, jobs) in enumerate(found.items()):
        if index:
            print()
        print(f"Jobs on cluster {name}:")
        print_table(["ID", "NAME", "SUBMITTED", "STARTED", "DURATION", "STATUS", "EXIT"],
                    [[j["id"], j.get("name") or "-", _when(j.get("submitted_at")),
                      _when(j.get("started_at")), _duration(j), j["status"], j.get("exit_code")]
                     for j in jobs])
    if not found:
        print("No UP clusters.")
    return 0
