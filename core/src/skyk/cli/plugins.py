"""``skyk plugins``: every installed plugin, its distribution and load errors."""

from __future__ import annotations

from dataclasses import asdict

from skyk.cli.output import add_output_flag, print_json, print_table

HELP = "List installed plugins: kind, name, distribution, version and load errors."


def configure(parser) -> None:
    """Add this command's arguments."""
    add_output_flag(parser)


def run(args) -> int:
    """Load every plugin of every kind and report each."""
    from skyk.plugins.kinds import GROUPS
    from skyk.plugins.manager import Kernel

    kernel = Kernel.load(tuple(GROUPS))
    infos = kernel.plugins
    if args.output == "json":
        print_json([asdict(i) | {"distribution": i.distribution, "version": i.version,
                                  "status": i.status} for i in infos])
        return 0
    print_table(["KIND", "NAME", "DISTRIBUTION", "VERSION", "STATUS"],
                [[i.kind, i.name, i.distribution, i.version, i.status] for i in infos])
    return 0
