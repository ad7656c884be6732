"""Picking the clusters a command acts on, and asking before destructive ones."""

from __future__ import annotations

import sys


def add_cluster_targets(parser, verb: str) -> None:
    """Give a command ``NAME...`` and ``-a/--all``."""
    parser.add_argument("clusters", nargs="*", metavar="NAME", help=f"clusters to {verb}")
    parser.add_argument("-a", "--all", action="store_true", help=f"{verb} every cluster")


def select(conn, args, verb: str) -> list:
    """Return the records ``args`` names (all with ``-a``); unknown names are errors.

    Clusters a service or a managed job owns are its controller's: ``-a``
    leaves them out (saying so), and naming one is refused with the command
    that removes it properly.
    """
    from skyk.errors import SkykError, SpecError
    from skyk.lifecycle.lookup import require
    from skyk.state import clusters

    if args.all and args.clusters:
        raise SpecError("give cluster names or -a, not both", hint=f"skyk {verb} -a {verb}s every cluster")
    if args.all:
        records = clusters.list_clusters(conn)
        owned = [r for r in records if r.owner is not None]
        if owned:
            groups = sorted({r.owner.group for r in owned})
            print(f"Skipping {len(owned)} cluster(s) of {', '.join(groups)}: 'skyk serve down NAME'"
                  " removes a service, 'skyk jobs cancel ID' a managed job", file=sys.stderr)
        return [r for r in records if r.owner is None]
    if not args.clusters:
        raise SpecError(f"name the clusters to {verb}", hint=f"skyk {verb} NAME, or -a for all")
    from skyk.cli.launch import check_cluster_name

    records = [require(conn, check_cluster_name(name, "")) for name in dict.fromkeys(args.clusters)]
    for record in records:
        if record.owner is not None:
            # Its controller would only launch it again: the service must do it.
            raise SkykError(f"cluster {record.name} is {record.owner}; its controller manages it",
                            hint=_owner_hint(record.owner))
    return records


def _owner_hint(owner) -> str:
    if owner.kind == "service":
        return f"'{owner.command()}' replaces it; '{owner.removal()}' removes the service"
    return f"'{owner.removal()}' cancels the job and tears its cluster down"


def raise_failures(failed: list[BaseException], total: int, verb: str) -> None:
    """Raise what went wrong for some of ``total`` clusters, after the others were done.

    One failure is raised as it is; several SkykErrors become one line naming each.
    """
    from skyk.errors import SkykError

    if not failed:
        return
    if len(failed) == 1 or not all(isinstance(e, SkykError) for e in failed):
        raise failed[0]
    raise SkykError(f"{len(failed)} of {total} clusters were not {verb}: "
                    + "; ".join(e.message for e in failed),
                    hint="; ".join(dict.fromkeys(e.hint for e in failed if e.hint)))


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
