"""gunicorn settings and hooks for the router (``-c python:skyk_router.gunicorn_conf``).

The hooks run in gunicorn's master process. They give the router a run
directory of its own: the workers share it for multiprocess Prometheus metrics
and ``/-/stats``, and gunicorn's control socket lives there; they clean up
after dead workers and at exit. This module must not import
prometheus_client at the top: the library picks its storage when first
imported, and the workers inherit the master's import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from skyk_router.settings import METRICS_DIR_ENV, STATS_DIR_ENV

#: Streams responses: uvicorn's ASGI worker (uvloop, httptools), whose HTTP
#: protocol hands proxied requests to the proxy without ASGI (skyk_router.protocol).
worker_class = "skyk_router.worker.RouterWorker"
#: Streams in progress get this long to finish on shutdown or reload.
graceful_timeout = 10


def on_starting(server) -> None:
    """Make the router's run directory before the first worker is forked."""
    run_dir = Path(tempfile.mkdtemp(prefix="skyk-router-"))
    (run_dir / "metrics").mkdir()
    (run_dir / "stats").mkdir()
    server.skyk_run_dir = run_dir
    # gunicorn 24+ opens a control socket, by default $HOME/.gunicorn/gunicorn.ctl:
    # one path for every router of the user, so each would take it from the last.
    # Each router's lives in its run directory (private: mkdtemp makes it 0700).
    if "control_socket" in server.cfg.settings:
        server.cfg.set("control_socket", str(run_dir / "gunicorn.ctl"))
    # Workers inherit the environment, and read these in RouterSettings.from_env().
    os.environ[METRICS_DIR_ENV] = str(run_dir / "metrics")
    os.environ[STATS_DIR_ENV] = str(run_dir / "stats")


def child_exit(server, worker) -> None:
    """Forget a dead worker's in-flight gauges and its stats."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, os.environ[METRICS_DIR_ENV])
    Path(os.environ[STATS_DIR_ENV], f"{worker.pid}.json").unlink(missing_ok=True)


def on_exit(server) -> None:
    """Remove the shared directory."""
    shutil.rmtree(server.skyk_run_dir, ignore_errors=True)
