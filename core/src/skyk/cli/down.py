"""``skyk down``: tear clusters down."""

from __future__ import annotations

from skyk.cli.targets import add_cluster_targets

HELP = "Tear clusters down: delete their nodes and everything made for them."


def configure(parser) -> None:
    """Add this command's arguments."""
    add_cluster_targets(parser, "down")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("-p", "--purge", action="store_true",
                        help="forget a cluster even if its cloud cannot delete it (e.g. plugin removed)")


def run(args) -> int:
    """Tear down each named cluster, in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from skyk.cli.targets import confirm, raise_failures, select
    from skyk.lifecycle.progress import step
    from skyk.state import db

    conn = db.connect()
    names = [r.name for r in select(conn, args, "down")]
    confirm("tear down", names, args.yes)
    if not names:
        return 0
    with step(f"Tearing down {', '.join(names)}"):
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            futures = {name: pool.submit(_down_one, name, args.purge) for name in names}
        # One cluster that cannot go must not keep the others up.
        raise_failures([f.exception() for f in futures.values() if f.exception() is not None],
                       len(names), "torn down")
    return 0


def _down_one(name: str, purge: bool) -> None:
    from skyk.lifecycle.control import teardown
    from skyk.state import clusters, db
    from skyk.state.locks import cluster_lock

    conn = db.connect()  # one connection per thread
    with cluster_lock(name):
        record = clusters.get(conn, name)
        if record is not None:
            teardown(conn, record, purge=purge)
