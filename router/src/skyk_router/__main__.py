"""``skyk-router``: run the router under gunicorn with uvicorn workers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from skyk_router.settings import CONTROLLER_ENV, REPLICAS_FILE_ENV

ASGI_TARGET = "skyk_router.asgi:app"
GUNICORN_CONFIG = "python:skyk_router.gunicorn_conf"


def parse_args(argv: Sequence[str] | None = None,
               environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Parse the command line: where to listen, how many workers, where replicas come from."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="skyk-router", description="Run the skyk router under gunicorn.")
    # Loopback by default: exposing the router is a deliberate choice of the caller.
    parser.add_argument("--host", action="append", dest="hosts", metavar="HOST",
                        help="address to bind; repeat for several (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn worker processes (default 2)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--controller", metavar="URL", default=env.get(CONTROLLER_ENV),
                        help=f"controller whose GET /-/replicas lists the ready replicas "
                             f"(default ${CONTROLLER_ENV})")
    source.add_argument("--replicas-file", metavar="PATH",
                        help="JSON file in the controller's format, re-read when it changes")
    parser.add_argument("--ssl-keyfile", metavar="PATH", help="TLS private key (PEM)")
    parser.add_argument("--ssl-certfile", metavar="PATH", help="TLS certificate chain (PEM)")
    args = parser.parse_args(argv)
    args.hosts = args.hosts or ["127.0.0.1"]
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {args.port}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if args.replicas_file:
        # The flag wins over an inherited $SKYK_ROUTER_CONTROLLER.
        args.controller = None
    if not args.controller and not args.replicas_file:
        parser.error(f"give --controller URL or --replicas-file PATH (or set ${CONTROLLER_ENV})")
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        parser.error("--ssl-keyfile and --ssl-certfile go together")
    return args


def gunicorn_argv(args: argparse.Namespace) -> list[str]:
    """Return the command that runs gunicorn on the router's ASGI app."""
    command = [sys.executable, "-m", "gunicorn", ASGI_TARGET, "--config", GUNICORN_CONFIG,
               "--workers", str(args.workers)]
    for host in args.hosts:
        # Brackets keep an IPv6 host apart from the port in gunicorn's bind syntax.
        command += ["--bind", f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"]
    if args.ssl_keyfile:
        command += ["--keyfile", args.ssl_keyfile, "--certfile", args.ssl_certfile]
    return command


def gunicorn_env(args: argparse.Namespace,
                 environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return gunicorn's environment: the workers read the replica source from it."""
    env = dict(os.environ if environ is None else environ)
    env.pop(CONTROLLER_ENV, None)
    env.pop(REPLICAS_FILE_ENV, None)
    if args.controller:
        env[CONTROLLER_ENV] = args.controller
    else:
        # Absolute: gunicorn may change directory (--chdir) before loading the app.
        env[REPLICAS_FILE_ENV] = os.path.abspath(args.replicas_file)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with gunicorn serving the router; returns only on error."""
    args = parse_args(argv)
    command = gunicorn_argv(args)
    # exec, not a child process: signals from a supervisor reach gunicorn directly.
    os.execvpe(command[0], command, gunicorn_env(args))
    return 1  # unreachable unless execvpe is replaced (as in tests)


if __name__ == "__main__":
    sys.exit(main())
