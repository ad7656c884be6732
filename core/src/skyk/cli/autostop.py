"""``skyk autostop``: stop or tear down a cluster after it has been idle."""

from __future__ import annotations

from skyk.cli.argtypes import idle_minutes

HELP = "Stop (or, with --down, tear down) a cluster after N idle minutes; --cancel turns it off."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("clusters", nargs="+", metavar="NAME", help="UP clusters")
    parser.add_argument("-i", "--idle-minutes", type=idle_minutes, metavar="N",
                        help="idle minutes before stopping (fractions allowed; default 5)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--down", action="store_true", help="tear down instead of stopping")
    group.add_argument("--cancel", action="store_true", help="turn autostop off")


def run(args) -> int:
    """Set or cancel autostop on each cluster's agent."""
    from skyk.cli.launch import check_cluster_name
    from skyk.errors import SpecError
    from skyk.lifecycle.control import set_autostop
    from skyk.lifecycle.lookup import head_client, require_up
    from skyk.lifecycle.progress import say
    from skyk.state import db

    if args.cancel and args.idle_minutes is not None:
        raise SpecError("give -i or --cancel, not both", hint="skyk autostop NAME --cancel")
    idle = None if args.cancel else (5.0 if args.idle_minutes is None else args.idle_minutes)
    conn = db.connect()
    for name in dict.fromkeys(args.clusters):
        _, handle = require_up(conn, check_cluster_name(name, ""))
        set_autostop(conn, handle, head_client(handle), idle, args.down)
        say(f"Cluster {name}: " + ("autostop off" if idle is None else
                                  f"{'tear down' if args.down else 'stop'} after {idle:g} idle minute(s)"))
    return 0
