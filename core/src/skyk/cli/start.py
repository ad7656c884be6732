"""``skyk start``: start stopped clusters."""

from __future__ import annotations

HELP = "Start stopped clusters and their node agents."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("clusters", nargs="+", metavar="NAME", help="clusters to start")


def run(args) -> int:
    """Start each named cluster."""
    from skyk.cli.launch import check_cluster_name
    from skyk.lifecycle.control import start_cluster
    from skyk.lifecycle.lookup import require
    from skyk.lifecycle.progress import say
    from skyk.state import clusters, db
    from skyk.state.locks import cluster_lock

    conn = db.connect()
    for name in dict.fromkeys(args.clusters):
        check_cluster_name(name, "")
        with cluster_lock(name):
            record = require(conn, name)
            if record.status == clusters.UP:
                say(f"Cluster {name} is already UP")
                continue
            if record.handle is None:
                from skyk.errors import SkykError

                raise SkykError(f"cluster {name} has no nodes to start", hint=f"'skyk down {name}' removes it")
            start_cluster(conn, record)
    return 0
