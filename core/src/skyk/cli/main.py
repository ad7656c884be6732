"""Entry point of the ``skyk`` command: argument parsing and error reporting.

Only argparse is imported up front; each command module defers its heavy
imports (pydantic, plugins, catalogs) to the moment it runs, so ``--help``
and local-state commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from skyk import __version__

#: command name -> module under skyk.cli that defines ``configure`` and ``run``.
COMMANDS: dict[str, str] = {
    "check": "check",
    "show-gpus": "show_gpus",
    "launch": "launch",
    "exec": "exec",
    "status": "status",
    "queue": "queue",
    "logs": "logs",
    "cancel": "cancel",
    "stop": "stop",
    "start": "start",
    "down": "down",
    "autostop": "autostop",
    "cost-report": "cost_report",
    "serve": "serve",
    "jobs": "jobs",
    "storage": "storage",
    "plugins": "plugins",
    "catalog": "catalog",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors that point at ``--help``."""

    def error(self, message: str):  # noqa: D401 - argparse API
        # argparse echoes the offending argument: bound and escape it like any error.
        from skyk.errors import printable

        self.exit(2, f"{self.prog}: error: {printable(message)} (hint: see '{self.prog} --help')\n")

    def _check_value(self, action, value):  # argparse's hook for ``choices``
        if action.choices is None or value in action.choices:
            return
        import difflib

        close = difflib.get_close_matches(str(value), [str(c) for c in action.choices], n=1)
        what = "command" if isinstance(action, argparse._SubParsersAction) else "choice"
        if close:
            raise argparse.ArgumentError(action, f"unknown {what} {value!r}; did you mean {close[0]}?")
        raise argparse.ArgumentError(action, f"unknown {what} {value!r} (choose from"
                                     f" {', '.join(map(str, action.choices))})")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every command."""
    parser = Parser(prog="skyk", description="Run AI workloads on the cheapest cloud that has the GPUs.")
    parser.add_argument("--version", action="version", version=f"skyk {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, module in COMMANDS.items():
        command = importlib.import_module(f"skyk.cli.{module}")
        sub = commands.add_parser(name, help=command.HELP, description=command.HELP)
        command.configure(sub)
        sub.set_defaults(_module=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from skyk.errors import SkykError, printable

    try:
        return args._module.run(args) or 0
    except SkykError as exc:
        from skyk.cli.output import print_error

        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("skyk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (head, grep -m1) went away; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug in skyk, not the user's input
        if type(exc).__module__ == "sqlite3":  # unless it is the state database's fault
            from skyk.cli.output import print_error
            from skyk.state.db import state_error

            error = state_error(exc)
            print_error(error)
            return error.exit_code
        if os.environ.get("SKYK_DEBUG"):
            raise
        print(f"skyk: internal error: {printable(f'{type(exc).__name__}: {exc}')}"
              + " (hint: rerun with SKYK_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
