"""Clusters a controller owns (a service's replicas, a managed job's nodes).

Both controllers tear such clusters down the same way, and ask their cloud
the same way whether it took the nodes away (a preemption).
"""

from __future__ import annotations

from skyk.state import clusters


def cluster_gone(conn, cluster: str) -> str | None:
    """Why a cluster's nodes no longer run (stopped or deleted by its cloud), or None.

    None also when the cloud cannot say: the caller then relies on its own
    checks (probes, the agent) rather than guess.
    """
    from skyk.lifecycle.lookup import cloud_of
    record = clusters.get(conn, cluster)
    if record is None or record.handle is None:
        return None
    try:
        states = cloud_of(record.handle.cloud).query(record.handle)
    except Exception:  # noqa: BLE001 - the cloud could not say
        return None
    if all(s == "running" for s in states):
        return None
    return "its nodes are " + ", ".join(sorted(set(states))) + " (the cloud took them away)"


def down_cluster(conn, cluster: str) -> None:
    """Tear down cluster ``cluster`` if it exists, under its lock."""
    from skyk.lifecycle.control import teardown
    from skyk.state.locks import cluster_lock

    with cluster_lock(cluster):
        record = clusters.get(conn, cluster)
        if record is not None:
            teardown(conn, record, purge=True)
