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
    """Ask each cluster's agent for its jobs; one that fails gets a line on stderr and exit 1."""
    from skyk.cli.launch import check_cluster_name
    from skyk.errors import SkykError
    from skyk.lifecycle.lookup import head_client, require_up
    from skyk.state import clusters, db

    conn = db.connect()
    if args.clusters:
        targets = [require_up(conn, check_cluster_name(n, ""))[0] for n in dict.fromkeys(args.clusters)]
    else:
        targets = [r for r in clusters.list_clusters(conn) if r.status == clusters.UP]
    found, failures = {}, []
    for record in targets:
        # One cluster whose agent fails must not hide the jobs of the others.
        try:
            found[record.name] = head_client(record.handle).queue()
        except SkykError as exc:
            failures.append(exc)
    code = _report(failures)
    if args.output == "json":
        from skyk.cli.output import print_json

        print_json({name: jobs for name, jobs in found.items()})
        return code
    from skyk.cli.output import print_table

    for index, (name, jobs) in enumerate(found.items()):
        if index:
            print()
        print(f"Jobs on cluster {name}:")
        print_table(["ID", "NAME", "SUBMITTED", "STARTED", "DURATION", "STATUS", "EXIT"],
                    [[j["id"], j.get("name") or "-", _when(j.get("submitted_at")),
                      _when(j.get("started_at")), _duration(j), j["status"], j.get("exit_code")]
                     for j in jobs])
    if not found and not failures:
        print("No UP clusters.")
    return code


def _report(failures: list) -> int:
    """Print one line per cluster whose jobs could not be read; return the exit code."""
    from skyk.cli.output import print_error

    for exc in failures:
        print_error(exc)
    return 1 if failures else 0
