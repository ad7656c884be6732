"""``skyk stop``: stop clusters, keeping their disks."""

from __future__ import annotations

from skyk.cli.targets import add_cluster_targets

HELP = "Stop clusters (their disks are kept; 'skyk start' brings them back)."


def configure(parser) -> None:
    """Add this command's arguments."""
    add_cluster_targets(parser, "stop")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def run(args) -> int:
    """Stop each named cluster."""
    from skyk.cli.targets import confirm, select
    from skyk.lifecycle.control import stop_cluster
    from skyk.lifecycle.progress import step
    from skyk.state import clusters, db
    from skyk.state.locks import cluster_lock

    conn = db.connect()
    records = [r for r in select(conn, args, "stop") if r.status != clusters.STOPPED or not args.all]
    confirm("stop", [r.name for r in records], args.yes)
    for record in records:
        with cluster_lock(record.name):
            record = clusters.get(conn, record.name)
            if record is None or record.status == clusters.STOPPED:
                continue
            if record.handle is None:
                from skyk.errors import SkykError

                raise SkykError(f"cluster {record.name} has no nodes to stop",
                                hint=f"'skyk down {record.name}' removes it")
            with step(f"Stopping cluster {record.name}"):
                stop_cluster(conn, record)
    return 0
