"""Cluster records and their usage intervals (for ``cost-report``)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from skyk.provision.types import ClusterHandle, ProvisionAttempt
from skyk.state import rows
from skyk.state.db import transaction

#: Provisioning or repairing; the nodes may be partly made.
INIT = "INIT"
#: Nodes up and the agent running.
UP = "UP"
#: Nodes stopped; disks kept.
STOPPED = "STOPPED"
#: Never stored: the row does not hold what skyk wrote (the note says why).
DAMAGED = "DAMAGED"


@dataclass(frozen=True)
class ClusterRecord:
    """A cluster as the state database knows it."""

    name: str
    status: str
    handle: ClusterHandle | None
    launched_at: float
    status_at: float
    autostop_minutes: float | None
    autostop_down: bool
    #: the ``skyk`` process working on the cluster right now, if any
    owner_pid: int | None
    #: why the status is what it is, when that is not obvious (e.g. "agent not running")
    note: str | None
    #: the service this cluster is a replica of, if any: not the user's to tear down
    owner: Owner | None = None


@dataclass(frozen=True)
class Owner:
    """What a cluster belongs to when it is not the user's own: a service's replica or a managed job.

    Derived from the ``replicas`` and ``managed_jobs`` rows, which name the
    cluster before it is launched and let go of it only once it is torn down.
    """

    #: "service" or "job"
    kind: str
    #: the service's name, or the job's name (its id when it has none)
    name: str
    #: the replica's id, or the job's id
    number: int

    def __str__(self) -> str:
        if self.kind == "service":
            return f"replica {self.number} of service {self.name}"
        return f"managed job {self.number} ({self.name})"

    @property
    def group(self) -> str:
        """The service or job as a whole, e.g. ``service qwen`` or ``managed job 3``."""
        return f"service {self.name}" if self.kind == "service" else f"managed job {self.number}"

    def command(self) -> str:
        """The command that tears this cluster down properly."""
        if self.kind == "service":
            return f"skyk serve down {self.name} --replica-id {self.number}"
        return f"skyk jobs cancel {self.number}"

    def removal(self) -> str:
        """The command that removes the service or job as a whole."""
        return f"skyk serve down {self.name}" if self.kind == "service" else f"skyk jobs cancel {self.number}"


def _record(row: sqlite3.Row) -> ClusterRecord:
    try:
        return ClusterRecord(
            name=rows.value(row, "name", str), status=_status(row),
            handle=rows.decoded(row, "handle", ClusterHandle.from_json, optional=True),
            launched_at=rows.value(row, "launched_at", float, int),
            status_at=rows.value(row, "status_at", float, int),
            autostop_minutes=rows.value(row, "autostop_minutes", float, int, optional=True),
            autostop_down=bool(rows.value(row, "autostop_down", int)),
            owner_pid=rows.value(row, "owner_pid", int, optional=True),
            note=rows.value(row, "note", str, optional=True),
            owner=_owner(row))
    except rows.DamagedRow as exc:
        # Shown, and removable with 'down --purge', without breaking every other cluster.
        return ClusterRecord(name=str(row["name"]), status=DAMAGED, handle=None, launched_at=0.0,
                             status_at=0.0, autostop_minutes=None, autostop_down=False, owner_pid=None,
                             note=f"record damaged: {exc}")


def _owner(row: sqlite3.Row) -> Owner | None:
    if row["owner_service"] is not None:
        return Owner("service", str(row["owner_service"]), row["owner_replica"])
    if row["owner_job"] is not None:
        return Owner("job", str(row["owner_job_name"] or row["owner_job"]), row["owner_job"])
    return None


def _status(row: sqlite3.Row) -> str:
    status = rows.value(row, "status", str)
    if status not in (INIT, UP, STOPPED):
        raise rows.DamagedRow(f"status is {status[:40]!r}, not {INIT}, {UP} or {STOPPED}")
    return status


#: Clusters with their owner, if a service's replica or a managed job's: see :class:`Owner`.
_SELECT = ("SELECT c.*, r.service AS owner_service, r.id AS owner_replica,"
           " j.id AS owner_job, j.name AS owner_job_name FROM clusters c"
           " LEFT JOIN replicas r ON r.rowid = (SELECT MIN(rowid) FROM replicas WHERE cluster = c.name)"
           " LEFT JOIN managed_jobs j ON j.id = (SELECT MIN(id) FROM managed_jobs WHERE cluster = c.name)")


def get(conn: sqlite3.Connection, name: str) -> ClusterRecord | None:
    """Return the cluster called ``name``, or None."""
    row = conn.execute(f"{_SELECT} WHERE c.name = ?", (name,)).fetchone()
    return _record(row) if row else None


def list_clusters(conn: sqlite3.Connection) -> list[ClusterRecord]:
    """Return every cluster, most recently launched first."""
    found = conn.execute(f"{_SELECT} ORDER BY c.launched_at DESC, c.name").fetchall()
    return [_record(r) for r in found]


def begin_launch(conn: sqlite3.Connection, name: str, owner_pid: int) -> None:
    """Record that ``owner_pid`` is provisioning cluster ``name`` (status INIT, no nodes yet)."""
    now = time.time()
    with transaction(conn):
        conn.execute("INSERT INTO clusters (name, status, launched_at, status_at, owner_pid)"
                     " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET status = excluded.status,"
                     " status_at = excluded.status_at, owner_pid = excluded.owner_pid, note = NULL",
                     (name, INIT, now, now, owner_pid))


def set_handle(conn: sqlite3.Connection, name: str, handle: ClusterHandle) -> None:
    """Remember the nodes of ``name`` as soon as they exist, so teardown can find them.

    The handle takes over from the attempt that made it, in one transaction.
    """
    with transaction(conn):
        conn.execute("UPDATE clusters SET handle = ?, launched_at = ? WHERE name = ?",
                     (handle.to_json(), time.time(), name))
        conn.execute("DELETE FROM attempts WHERE cluster = ? AND uid = ?", (name, handle.uid))


def record_attempt(conn: sqlite3.Connection, attempt: ProvisionAttempt) -> None:
    """Remember ``attempt`` before its cloud is asked for nodes."""
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO attempts (cluster, uid, cloud, region, zone, started_at)"
                     " VALUES (?, ?, ?, ?, ?, ?)", (attempt.cluster, attempt.uid, attempt.cloud,
                                                    attempt.region, attempt.zone, time.time()))


def forget_attempt(conn: sqlite3.Connection, attempt: ProvisionAttempt) -> None:
    """Forget an attempt that left nothing behind (it cleaned up, or was cleaned up)."""
    with transaction(conn):
        conn.execute("DELETE FROM attempts WHERE cluster = ? AND uid = ?", (attempt.cluster, attempt.uid))


def attempts(conn: sqlite3.Connection, name: str) -> list[ProvisionAttempt]:
    """Return the unsettled provisioning attempts of cluster ``name``, oldest first."""
    rows = conn.execute("SELECT cluster, uid, cloud, region, zone FROM attempts WHERE cluster = ?"
                        " ORDER BY started_at", (name,)).fetchall()
    return [ProvisionAttempt(*row) for row in rows]


def set_status(conn: sqlite3.Connection, name: str, status: str, note: str | None = None,
               owner_pid: int | None = None) -> None:
    """Change a cluster's status; track usage for ``cost-report`` as nodes start and stop."""
    now = time.time()
    with transaction(conn):
        row = conn.execute("SELECT status, handle FROM clusters WHERE name = ?", (name,)).fetchone()
        if row is None:
            return
        conn.execute("UPDATE clusters SET status = ?, status_at = ?, note = ?, owner_pid = ?"
                     " WHERE name = ?", (status, now, note, owner_pid, name))
        if status == UP and row["handle"]:
            _start_usage(conn, ClusterHandle.from_json(row["handle"]), now)
        elif status == STOPPED:
            _end_usage(conn, name, now)


def set_autostop(conn: sqlite3.Connection, name: str, idle_minutes: float | None, down: bool) -> None:
    """Remember the autostop setting shown by ``status``."""
    with transaction(conn):
        conn.execute("UPDATE clusters SET autostop_minutes = ?, autostop_down = ? WHERE name = ?",
                     (idle_minutes, int(down), name))


def remove(conn: sqlite3.Connection, name: str) -> None:
    """Forget a torn-down cluster, closing its usage interval."""
    with transaction(conn):
        _end_usage(conn, name, time.time())
        conn.execute("DELETE FROM clusters WHERE name = ?", (name,))
        conn.execute("DELETE FROM attempts WHERE cluster = ?", (name,))
        conn.execute("DELETE FROM cluster_mounts WHERE cluster = ?", (name,))


def _start_usage(conn: sqlite3.Connection, handle: ClusterHandle, now: float) -> None:
    open_row = conn.execute("SELECT 1 FROM usage WHERE cluster = ? AND ended_at IS NULL",
                            (handle.cluster,)).fetchone()
    if open_row:
        return
    resources = handle.instance_type + (f" ({handle.accelerator}:{handle.accelerator_count:g})"
                                        if handle.accelerator else "")
    conn.execute("INSERT INTO usage (cluster, uid, infra, resources, num_nodes, hourly_price, started_at)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (handle.cluster, handle.uid, handle.infra, resources + (" [spot]" if handle.use_spot else ""),
                  len(handle.nodes), handle.hourly_price, now))


def _end_usage(conn: sqlite3.Connection, name: str, now: float) -> None:
    conn.execute("UPDATE usage SET ended_at = ? WHERE cluster = ? AND ended_at IS NULL", (now, name))


@dataclass(frozen=True)
class Usage:
    """One cluster launch's bill: how long its nodes ran and what that cost."""

    cluster: str
    #: the launch's attempt uid, as its cluster's handle has it while the cluster lives
    uid: str
    infra: str
    resources: str
    num_nodes: int
    #: per node
    hourly_price: float
    started_at: float
    seconds: float
    #: all nodes, USD
    cost: float
    running: bool


def usage_report(conn: sqlite3.Connection) -> list[Usage]:
    """Return usage per cluster launch (one launch may span stops and starts), newest first."""
    now = time.time()
    rows = conn.execute("SELECT cluster, uid, infra, resources, num_nodes, hourly_price,"
                        " MIN(started_at) AS started_at,"
                        " SUM(COALESCE(ended_at, ?) - started_at) AS seconds,"
                        " MAX(ended_at IS NULL) AS running"
                        " FROM usage GROUP BY cluster, uid ORDER BY started_at DESC", (now,)).fetchall()
    return [Usage(r["cluster"], r["uid"], r["infra"], r["resources"], r["num_nodes"], r["hourly_price"],
                  r["started_at"], r["seconds"], r["hourly_price"] * r["num_nodes"] * r["seconds"] / 3600,
                  bool(r["running"])) for r in rows]
