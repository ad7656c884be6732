"""The agent's command line: ``python -m skyk_agent COMMAND`` on a node (or ``python -m skyk.agent``).

The commands live in :mod:`.commands`. The two the agent runs for every
job, ``part`` and ``driver``, are recognised here first and run without
loading argparse (nor, for ``part``, SQLite): their start-up time is part
of the delay between ``submit`` and the job's first command.
"""

from __future__ import annotations

import sys


def _fast(argv: list[str]) -> int | None:
    """Run ``part``/``driver`` given in their exact internal form; None for anything else."""
    if not argv or argv[0] not in ("part", "driver") or len(argv) % 2 == 0:
        return None
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    try:
        numbers = {k: int(v) for k, v in options.items() if k in ("--job", "--rank")}
    except ValueError:
        return None  # not numbers: the full parser reports it
    if argv[0] == "driver" and set(options) == {"--job"}:
        from .driver import main

        return main(numbers["--job"])
    if (argv[0] == "part" and set(options) == {"--job", "--rank", "--phase"}
            and options["--phase"] in ("setup", "run")):
        from .part import cli_exit, main

        cli_exit(main(numbers["--job"], numbers["--rank"], options["--phase"]))
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one agent command; return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    code = _fast(argv)
    if code is not None:
        return code
    from .commands import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
