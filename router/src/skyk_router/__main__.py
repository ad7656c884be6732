"""``skyk-router``: run the router under gunicorn.

The full router (replica discovery, SSE streaming, load-balancing policies)
comes with serving; today this starts the skeleton that answers
``GET /-/health``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

WSGI_TARGET = "skyk_router.wsgi:app"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line: where to listen and how many worker processes."""
    parser = argparse.ArgumentParser(
        prog="skyk-router", description="Run the skyk router under gunicorn.")
    # Loopback by default: exposing the router is a deliberate choice of the caller.
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn worker processes (default 2)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {args.port}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    return args


def gunicorn_argv(args: argparse.Namespace) -> list[str]:
    """Return the command that runs gunicorn on the router's WSGI app."""
    # Brackets keep an IPv6 host apart from the port in gunicorn's bind syntax.
    host = f"[{args.host}]" if ":" in args.host else args.host
    return [sys.executable, "-m", "gunicorn", WSGI_TARGET,
            "--bind", f"{host}:{args.port}", "--workers", str(args.workers)]


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with gunicorn serving the router; returns only on error."""
    command = gunicorn_argv(parse_args(argv))
    # exec, not a child process: signals from a supervisor reach gunicorn directly.
    os.execvp(command[0], command)
    return 1  # unreachable unless execvp is replaced (as in tests)


if __name__ == "__main__":
    sys.exit(main())
