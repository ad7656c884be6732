"""Picking the clusters a command acts on, and asking before destructive ones."""

from __future__ import annotations

import sys


def add_cluster_targets(parser, verb: str) -> None:
    """Give a command ``NAME...`` and ``-a/--all``."""
    parser.add_argument("clusters", nargs="*", metavar="NAME", help=f"clusters to {verb}")
    parser.add_argument("-a", "--all", action="store_true", help=f"{verb} every cluster")


def select(conn, args, verb: str) -> list:
    """Return the records ``args`` names (all with ``-a``); unknown names are errors."""
    from skyk.errors import SpecError
    from skyk.lifecycle.lookup import require
    from skyk.state import clusters

    if args.all and args.clusters:
        raise SpecError("give cluster names or -a, not both", hint=f"skyk {verb} -a {verb}s every cluster")
    if args.all:
        return clusters.list_clusters(conn)
    if not args.clusters:
        raise SpecError(f"name the clusters to {verb}", hint=f"skyk {verb} NAME, or -a for all")
    from skyk.cli.launch import check_cluster_name

    return [require(conn, check_cluster_name(name, "")) for name in dict.fromkeys(args.clusters)]


def confirm(verb: str, names: list[str], yes: bool) -> None:
    """Ask before a destructive action, unless ``-y``; refuse without a terminal to ask on."""
    from skyk.errors import SkykError

    if yes or not names:
        return
    listed = ", ".join(names)
    if not sys.stdin.isatty():
        raise SkykError(f"refusing to {verb} {listed} without confirmation", hint="add -y to confirm")
    answer = input(f"{verb.capitalize()} {listed}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise SkykError(f"{verb} cancelled", hint="add -y to skip this question")
