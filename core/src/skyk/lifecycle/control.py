"""Stopping, starting and tearing down clusters, and reconciling state with what really runs."""

from __future__ import annotations

import os
import sqlite3

from skyk.errors import SkykError
from skyk.lifecycle import lookup, nodes
from skyk.lifecycle.progress import step
from skyk.provision.types import ClusterHandle
from skyk.state import clusters
from skyk.state.clusters import ClusterRecord

#: seconds to wait for an agent to cancel its jobs before the nodes go anyway
_SHUTDOWN_TIMEOUT = 15


def _shutdown_agent(handle: ClusterHandle) -> None:
    """Cancel the cluster's jobs on every node; best effort, the nodes go next anyway."""
    try:
        lookup.head_client(handle, timeout=_SHUTDOWN_TIMEOUT).shutdown()
    except (SkykError, OSError):
        pass


def teardown(conn: sqlite3.Connection, record: ClusterRecord, purge: bool = False) -> None:
    """Terminate a cluster's nodes and forget it.

    With ``purge``, a cluster whose cloud plugin is gone (or fails) is
    forgotten anyway, as SkyPilot's ``down --purge`` does; so is a damaged record.
    """
    if record.status == clusters.DAMAGED and not purge:
        raise SkykError(f"cluster {record.name}: {record.note}",
                        hint=f"'skyk down --purge {record.name}' forgets it (check its cloud for nodes left)")
    from skyk.lifecycle import buckets

    if record.handle is not None:
        try:
            cloud = lookup.cloud_of(record.handle.cloud)
            _shutdown_agent(record.handle)
            buckets.detach(conn, record.handle)
            cloud.terminate(record.handle)
            nodes.close_connections(record.handle)
        except Exception:
            if not purge:
                raise
    remove_attempts(conn, record.name, purge)
    clusters.remove(conn, record.name)
    buckets.release(conn, record.name)


def remove_attempts(conn: sqlite3.Connection, name: str, purge: bool = False) -> None:
    """Remove whatever unsettled provisioning attempts of cluster ``name`` made.

    These are attempts whose launch died (or gave up on them) before they
    returned nodes: only the cloud, asked by the attempt's uid, knows what exists.
    """
    for attempt in clusters.attempts(conn, name):
        try:
            lookup.cloud_of(attempt.cloud).remove_attempt(attempt)
        except Exception as exc:
            if not purge:
                raise SkykError(f"cluster {name}: could not remove what the interrupted launch on"
                                f" {attempt.infra} (attempt {attempt.uid}) made: {_reason(exc)}",
                                hint=f"check the {attempt.cloud} console for resources tagged {attempt.uid};"
                                     f" 'skyk down --purge {name}' forgets them") from None
        clusters.forget_attempt(conn, attempt)


def _reason(exc: Exception) -> str:
    return exc.one_line() if isinstance(exc, SkykError) else str(exc) or type(exc).__name__


def _attempts_left(conn: sqlite3.Connection, name: str) -> list[str]:
    """What the unsettled attempts of cluster ``name`` left behind, asking each attempt's cloud."""
    left = []
    for attempt in clusters.attempts(conn, name):
        try:
            found = lookup.cloud_of(attempt.cloud).find_attempt(attempt)
        except Exception as exc:  # noqa: BLE001 - said in the note instead
            found = [f"unknown ({_reason(exc)})"]
        if found:
            left.append(f"on {attempt.infra} (attempt {attempt.uid}): {', '.join(found)}")
    return left


def _interrupted_note(name: str, left: list[str]) -> str:
    """Say what an interrupted launch left behind (``left``, from :func:`_attempts_left`)."""
    if not left:
        return "launch was interrupted before any node existed"
    return f"launch was interrupted while provisioning; left {'; '.join(left)}; 'skyk down {name}' removes it"


def stop_cluster(conn: sqlite3.Connection, record: ClusterRecord) -> None:
    """Stop an UP (or half-made) cluster's nodes, keeping their disks."""
    cloud = lookup.cloud_of(record.handle.cloud)
    # Ask the cloud first: bad credentials or an unreachable cloud fail the stop
    # before the agent cancels the jobs, leaving the cluster as it was.
    from skyk.lifecycle import buckets

    cloud.query(record.handle)
    _shutdown_agent(record.handle)
    buckets.detach(conn, record.handle)
    cloud.stop(record.handle)
    nodes.close_connections(record.handle)
    clusters.set_status(conn, record.name, clusters.STOPPED)


def start_cluster(conn: sqlite3.Connection, record: ClusterRecord):
    """Start a stopped cluster and its agent; return (handle, agent client)."""
    cloud = lookup.cloud_of(record.handle.cloud)
    clusters.set_status(conn, record.name, clusters.INIT, note="starting", owner_pid=os.getpid())
    with step(f"Starting cluster {record.name} on {record.handle.infra}"):
        handle = cloud.start(record.handle)
        clusters.set_handle(conn, record.name, handle)
        cloud.wait_ready(handle, 600)
        client = nodes.start_agent(handle, cloud)
        if record.autostop_minutes is not None:
            client.autostop(record.autostop_minutes, record.autostop_down)
        from skyk.lifecycle import buckets

        buckets.remount(conn, handle)
    clusters.set_status(conn, record.name, clusters.UP)
    return handle, client


def _unanswered(health: dict) -> str:
    """The note of a cluster whose agent daemon runs but does not answer."""
    return f"node agent (pid {health.get('pid')}) does not answer (stopped or hung?)"


def had_agent(record: ClusterRecord) -> bool:
    """Whether every node of a not-UP cluster runs and its head has the agent installed.

    Such a cluster was whole once and keeps its nodes' files: restarting the
    agent (:func:`restart_agent`) brings it back. False means the launch that
    made it never got that far, and it is cleaned up and made again. An agent
    that runs but does not answer is an error: another cannot start beside it.
    """
    handle = record.handle
    if handle is None or not all(s == "running" for s in lookup.cloud_of(handle.cloud).query(handle)):
        return False
    try:
        health = lookup.head_client(handle).health()
    except SkykError:
        return False  # an agent that cannot even report: as good as none
    if health is None:
        return False
    if health.get("alive") and not health.get("answering"):
        raise SkykError(f"cluster {record.name}: {_unanswered(health)}",
                        hint=f"'skyk stop {record.name}' then 'skyk start {record.name}' restarts it"
                             " and keeps the node's files")
    return True


def restart_agent(conn: sqlite3.Connection, record: ClusterRecord):
    """Start the agent again on a cluster whose nodes run (see :func:`had_agent`); return (handle, client)."""
    cloud = lookup.cloud_of(record.handle.cloud)
    clusters.set_status(conn, record.name, clusters.INIT, note="restarting the node agent",
                        owner_pid=os.getpid())
    with step(f"Restarting the node agent of cluster {record.name}"):
        client = nodes.start_agent(record.handle, cloud)
    return record.handle, client


def refresh(conn: sqlite3.Connection, record: ClusterRecord) -> ClusterRecord | None:
    """Ask the cloud and the agent what really runs; update and return the record (None: gone).

    A cluster another skyk process is working on is left as it is.
    """
    if record.status == clusters.DAMAGED or lookup.owner_alive(record):
        return record
    if record.handle is None:
        note = _interrupted_note(record.name, _attempts_left(conn, record.name))
        clusters.set_status(conn, record.name, clusters.INIT, note=note)
        return clusters.get(conn, record.name)
    cloud = lookup.cloud_of(record.handle.cloud)
    states = cloud.query(record.handle)
    if all(s == "missing" for s in states):
        left = _attempts_left(conn, record.name)
        if not left:
            clusters.remove(conn, record.name)
            return None
        # Its nodes are gone, but an attempt a launch gave up on made something:
        # the cluster stays, so that 'down' removes it.
        clusters.set_status(conn, record.name, clusters.INIT, note=_interrupted_note(record.name, left))
        return clusters.get(conn, record.name)
    gone = [i for i, s in enumerate(states) if s in ("preempted", "terminated", "missing")]
    if len(gone) == len(states) and record.autostop_down and "preempted" not in states:
        # autostop --down powered the nodes off and the cloud deleted them:
        # remove what is left (firewall rules, ...) and forget the cluster.
        from skyk.lifecycle import buckets

        cloud.terminate(record.handle)
        remove_attempts(conn, record.name)
        clusters.remove(conn, record.name)
        buckets.release(conn, record.name)
        return None
    if gone:
        status, note = clusters.INIT, _gone_note(record.name, states)
    elif all(s == "stopped" for s in states):
        status, note = clusters.STOPPED, None
    elif all(s == "running" for s in states):
        health = lookup.head_client(record.handle).health()
        if health and health.get("alive") and health.get("answering"):
            status, note = clusters.UP, None
        elif health and health.get("alive"):
            status, note = clusters.INIT, _unanswered(health)
        elif record.status == clusters.INIT and record.note:
            status, note = clusters.INIT, record.note
        elif record.status == clusters.INIT and health is None:
            # A launch (its owner is gone) made the nodes but never started the agent.
            status, note = clusters.INIT, (f"launch was interrupted before the node agent started;"
                                           f" 'skyk down {record.name}' removes the nodes")
        else:
            status, note = clusters.INIT, "node agent is not running (processes killed?)"
    else:
        status = clusters.INIT
        note = "nodes: " + ", ".join(f"{i}={s}" for i, s in enumerate(states))
    if (status, note) != (record.status, record.note):
        clusters.set_status(conn, record.name, status, note=note)
    return clusters.get(conn, record.name)


def _gone_note(name: str, states: list[str]) -> str:
    """Say which nodes are gone for good, and why, for a cluster the cloud still lists."""
    why = {"preempted": "preempted by the cloud", "terminated": "terminated outside skyk",
           "missing": "gone"}
    parts = []
    for state in ("preempted", "terminated", "missing"):
        ranks = [str(i) for i, s in enumerate(states) if s == state]
        if ranks:
            parts.append(f"node{'s' if len(ranks) > 1 else ''} {', '.join(ranks)} {why[state]}")
    return f"{'; '.join(parts)}; 'skyk down {name}' cleans up"


def set_autostop(conn, handle, client, idle_minutes: float | None, down: bool) -> None:
    """Tell the head's agent and the state database the autostop setting (None cancels)."""
    if idle_minutes is not None:
        cloud = lookup.cloud_of(handle.cloud)
        why = cloud.autostop_refusal(down, handle.use_spot)
        if why is not None or cloud.autostop_command(handle, down) is None:
            why = why or f"the {handle.cloud} cloud cannot stop its nodes from inside"
            raise SkykError(f"cluster {handle.cluster}: {why}, so autostop is not set",
                            hint=f"stop it yourself with 'skyk stop {handle.cluster}', or remove it"
                                 f" with 'skyk down {handle.cluster}'")
        # Before the agent is told: its poweroff must already do what autostop means.
        cloud.prepare_autostop(handle, down)
    client.autostop(idle_minutes, down)
    clusters.set_autostop(conn, handle.cluster, idle_minutes, down)
