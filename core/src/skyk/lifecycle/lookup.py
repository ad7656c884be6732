"""Finding a cluster by name, its cloud plugin and its head node's agent."""

from __future__ import annotations

import os
import sqlite3

from skyk.errors import PluginError, SkykError, not_found
from skyk.provision.cloud import Cloud
from skyk.provision.types import ClusterHandle
from skyk.state import clusters
from skyk.state.clusters import ClusterRecord


def require(conn: sqlite3.Connection, name: str, *statuses: str) -> ClusterRecord:
    """Return cluster ``name``; raise a one-line error if it does not exist or is not in ``statuses``."""
    record = clusters.get(conn, name)
    if record is None:
        raise not_found("cluster", name, [r.name for r in clusters.list_clusters(conn)],
                        hint="'skyk status' lists your clusters")
    if statuses and record.status not in statuses:
        hint = {clusters.STOPPED: f"start it with 'skyk start {name}'",
                clusters.INIT: f"check it with 'skyk status -r {name}'; 'skyk down {name}' cleans it up",
                clusters.DAMAGED: f"'skyk down --purge {name}' forgets it"}
        why = f" ({record.note})" if record.status == clusters.DAMAGED else ""
        raise SkykError(f"cluster {name} is {record.status}{why}", hint=hint.get(record.status))
    return record


def require_up(conn: sqlite3.Connection, name: str) -> tuple[ClusterRecord, ClusterHandle]:
    """Return an UP cluster and its handle."""
    record = require(conn, name, clusters.UP)
    assert record.handle is not None  # UP implies nodes
    return record, record.handle


def cloud_of(name: str) -> Cloud:
    """Load just the cloud plugin called ``name``."""
    from skyk.plugins.manager import Kernel

    kernel = Kernel.load(("cloud",), [name])
    found = kernel.clouds().get(name)
    if found is None:
        reasons = "; ".join(f.error for f in kernel.failures) or "it is not installed"
        raise PluginError(f"cloud plugin '{name}' is not available: {reasons}",
                          hint=f"reinstall skyk-{name} (from a skyk checkout: pip install ./plugins/{name});"
                          " 'skyk plugins' lists what is installed")
    return found


def owner_alive(record: ClusterRecord) -> bool:
    """Whether another live skyk process is working on the cluster right now."""
    from skyk.agent.procs import pid_alive

    pid = record.owner_pid
    return pid != os.getpid() and pid_alive(pid)


class HeadAgent:
    """The head node's agent client, with its errors turned into one-line ``SkykError``s.

    The agent package is standard-library only (it is shipped to nodes), so
    its exceptions cannot be ``SkykError``s themselves.
    """

    def __init__(self, handle: ClusterHandle, timeout: float = 300.0):
        from skyk.agent.client import AgentClient
        from skyk.agent.runners import runner_from_spec

        self._client = AgentClient(runner_from_spec(handle.head.runner), timeout=timeout)
        self._cluster = handle.cluster

    def __getattr__(self, name: str):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            from skyk.agent.client import AgentError, UnknownJobError

            try:
                return method(*args, **kwargs)
            except UnknownJobError as exc:
                raise SkykError(f"{exc} (cluster {self._cluster})",
                                hint=f"'skyk queue {self._cluster}' lists its jobs") from None
            except AgentError as exc:
                raise SkykError(f"cluster {self._cluster}: {exc}",
                                hint=f"'skyk status -r {self._cluster}' checks the cluster") from None

        return call


def head_client(handle: ClusterHandle, timeout: float = 300.0) -> HeadAgent:
    """Return the agent client of ``handle``'s head node."""
    return HeadAgent(handle, timeout)
