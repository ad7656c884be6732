"""The router's configuration, read from the environment of each worker.

``skyk-router`` execs gunicorn, and gunicorn imports the app in every worker
process, so the command line reaches the app through environment variables
(the names below) rather than through arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: Base URL of the service controller that lists the ready replicas.
CONTROLLER_ENV = "SKYK_ROUTER_CONTROLLER"
#: A JSON file in the controller's format, for tests and standalone use.
REPLICAS_FILE_ENV = "SKYK_ROUTER_REPLICAS_FILE"
#: Directory where each worker publishes its load for ``/-/stats`` (set by gunicorn_conf).
STATS_DIR_ENV = "SKYK_ROUTER_STATS_DIR"
#: prometheus_client's own variable: when set, ``/metrics`` sums all workers.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds an upstream may stay silent (before its headers or between chunks).
IDLE_TIMEOUT_ENV = "SKYK_ROUTER_UPSTREAM_IDLE_TIMEOUT"


@dataclass(frozen=True)
class RouterSettings:
    """What one router worker needs to know; every field has a usable default."""

    controller_url: str | None = None
    replicas_file: str | None = None
    stats_dir: str | None = None
    metrics_dir: str | None = None
    #: How often the replica list is re-read; changes must apply within 2 s.
    poll_interval_s: float = 0.5
    connect_timeout_s: float = 5.0
    #: Generous: a non-streamed completion sends its headers only when it is done.
    upstream_idle_timeout_s: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RouterSettings:
        """Build settings from the ``SKYK_ROUTER_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        idle = env.get(IDLE_TIMEOUT_ENV)
        return cls(
            controller_url=env.get(CONTROLLER_ENV) or None,
            replicas_file=env.get(REPLICAS_FILE_ENV) or None,
            stats_dir=env.get(STATS_DIR_ENV) or None,
            metrics_dir=env.get(METRICS_DIR_ENV) or None,
            **({"upstream_idle_timeout_s": float(idle)} if idle else {}),
        )

    @property
    def source_description(self) -> str:
        """Where the replica list comes from, for messages and hints."""
        if self.controller_url:
            return f"controller {self.controller_url}"
        if self.replicas_file:
            return f"replicas file {self.replicas_file}"
        return "no replica source (neither --controller nor --replicas-file was given)"
