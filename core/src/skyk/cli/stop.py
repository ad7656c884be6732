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
    from skyk.cli.targets import confirm, raise_failures, select
    from skyk.errors import SkykError
    from skyk.lifecycle.control import stop_cluster
    from skyk.lifecycle.progress import step
    from skyk.state import clusters, db
    from skyk.state.locks import cluster_lock

    conn = db.connect()
    records = [r for r in select(conn, args, "stop") if r.status != clusters.STOPPED or not args.all]
    confirm("stop", [r.name for r in records], args.yes)
    failed: list[BaseException] = []
    for record in records:
        # One cluster that cannot stop (damaged, no nodes yet) must not keep the others running.
        try:
            with cluster_lock(record.name):
                record = clusters.get(conn, record.name)
                if record is None or record.status == clusters.STOPPED:
                    continue
                if record.status == clusters.DAMAGED:
                    raise SkykError(f"cluster {record.name}: {record.note}",
                                    hint=f"'skyk down --purge {record.name}' forgets it")
                if record.handle is None:
                    raise SkykError(f"cluster {record.name} has no nodes to stop",
                                    hint=f"'skyk down {record.name}' removes it")
                with step(f"Stopping cluster {record.name}"):
                    stop_cluster(conn, record)
        except SkykError as exc:
            failed.append(exc)
    raise_failures(failed, len(records), "stopped")
    return 0
