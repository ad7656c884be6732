"""Services and their replicas in the state database (``services`` and ``replicas`` tables)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from skyk.state import rows
from skyk.state.db import transaction

# Replica states, as SkyServe names them.
#: Every router listens here; the controller and the CLI reach it on this address.
LOOPBACK = "127.0.0.1"

PENDING = "PENDING"
PROVISIONING = "PROVISIONING"
STARTING = "STARTING"
READY = "READY"
NOT_READY = "NOT_READY"
SHUTTING_DOWN = "SHUTTING_DOWN"
FAILED = "FAILED"
FAILED_INITIAL_DELAY = "FAILED_INITIAL_DELAY"
FAILED_PROBING = "FAILED_PROBING"
PREEMPTED = "PREEMPTED"
#: a service whose row does not hold what skyk wrote (never stored; its note says why)
DAMAGED = "DAMAGED"
#: replicas that count towards the service's size
ALIVE = (PENDING, PROVISIONING, STARTING, READY, NOT_READY)
#: replicas that will be torn down and replaced
DOOMED = (FAILED, FAILED_INITIAL_DELAY, FAILED_PROBING, PREEMPTED)

# How ``serve update`` replaces the old version's replicas.
#: old replicas go one by one as new ones become ready; both versions serve meanwhile
ROLLING = "rolling"
#: old replicas serve alone until every new one is ready, then all go at once
BLUE_GREEN = "blue_green"
UPDATE_MODES = (ROLLING, BLUE_GREEN)


@dataclass(frozen=True)
class ServiceRecord:
    """A service: its current version's task and the processes that run it."""

    name: str
    version: int
    status: str
    task: dict
    created_at: float
    controller_pid: int | None
    controller_port: int | None
    router_pid: int | None
    router_port: int | None
    note: str | None
    #: Where the endpoint is published (the router also listens on 127.0.0.1); None: 127.0.0.1.
    router_host: str | None = None

    @property
    def endpoint(self) -> str | None:
        """``host:port`` of the service's endpoint, or None before its router has a port."""
        if self.router_port is None:
            return None
        return f"{self.router_host or LOOPBACK}:{self.router_port}"


@dataclass(frozen=True)
class ReplicaRecord:
    """One replica: a cluster launched for one version of a service."""

    service: str
    id: int
    version: int
    cluster: str
    status: str
    url: str | None
    launched_at: float
    status_at: float
    probe_failures: int
    note: str | None
    spot: bool = False


def _service(row: sqlite3.Row) -> ServiceRecord:
    try:
        return ServiceRecord(
            rows.value(row, "name", str), rows.value(row, "version", int), rows.value(row, "status", str),
            rows.decoded(row, "task", _task), rows.value(row, "created_at", float, int),
            rows.value(row, "controller_pid", int, optional=True),
            rows.value(row, "controller_port", int, optional=True),
            rows.value(row, "router_pid", int, optional=True), rows.value(row, "router_port", int, optional=True),
            rows.value(row, "note", str, optional=True), rows.value(row, "router_host", str, optional=True))
    except rows.DamagedRow as exc:
        # Shown by 'serve status' and removed by 'serve down NAME'; no process of it is touched.
        return ServiceRecord(str(row["name"]), 0, DAMAGED, {}, time.time(), None, None, None, None,
                             f"record damaged: {exc}")


def _task(text: str) -> dict:
    task = json.loads(text)
    if not isinstance(task, dict):
        raise TypeError(f"a task is a mapping, not {type(task).__name__}")
    return task


def _replica(row: sqlite3.Row) -> ReplicaRecord:
    return ReplicaRecord(row["service"], row["id"], row["version"], row["cluster"], row["status"],
                         row["url"], row["launched_at"], row["status_at"], row["probe_failures"],
                         row["note"], bool(row["spot"]))


def get_service(conn: sqlite3.Connection, name: str) -> ServiceRecord | None:
    """Return service ``name`` or None."""
    row = conn.execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
    return _service(row) if row else None


def list_services(conn: sqlite3.Connection) -> list[ServiceRecord]:
    """Return every service, oldest first."""
    return [_service(r) for r in conn.execute("SELECT * FROM services ORDER BY created_at, name")]


def add_service(conn: sqlite3.Connection, name: str, task: dict) -> bool:
    """Create service ``name`` at version 1; False if it already exists."""
    with transaction(conn):
        if conn.execute("SELECT 1 FROM services WHERE name = ?", (name,)).fetchone():
            return False
        now = time.time()
        conn.execute("INSERT INTO services (name, version, status, task, created_at)"
                     " VALUES (?, 1, 'CONTROLLER_INIT', ?, ?)", (name, json.dumps(task), now))
        conn.execute("INSERT INTO service_versions (service, version, task, mode, created_at)"
                     " VALUES (?, 1, ?, ?, ?)", (name, json.dumps(task), ROLLING, now))
    return True


def add_version(conn: sqlite3.Connection, name: str, task: dict, mode: str) -> int:
    """Make ``task`` the newest version of service ``name``, rolled out by ``mode``; return its number."""
    with transaction(conn):
        version = conn.execute("SELECT version FROM services WHERE name = ?", (name,)).fetchone()[0] + 1
        conn.execute("UPDATE services SET version = ?, task = ? WHERE name = ?",
                     (version, json.dumps(task), name))
        conn.execute("INSERT INTO service_versions (service, version, task, mode, created_at)"
                     " VALUES (?, ?, ?, ?, ?)", (name, version, json.dumps(task), mode, time.time()))
    return version


def version(conn: sqlite3.Connection, name: str, number: int) -> tuple[dict, str]:
    """Return the task and update mode of one version of service ``name``."""
    row = conn.execute("SELECT task, mode FROM service_versions WHERE service = ? AND version = ?",
                       (name, number)).fetchone()
    return json.loads(row["task"]), row["mode"]


def update_service(conn: sqlite3.Connection, name: str, **fields) -> None:
    """Set columns of service ``name``."""
    if fields:
        columns = ", ".join(f"{key} = ?" for key in fields)
        with transaction(conn):
            conn.execute(f"UPDATE services SET {columns} WHERE name = ?", (*fields.values(), name))


def remove_service(conn: sqlite3.Connection, name: str) -> None:
    """Forget service ``name`` and its replicas."""
    with transaction(conn):
        conn.execute("DELETE FROM replicas WHERE service = ?", (name,))
        conn.execute("DELETE FROM service_versions WHERE service = ?", (name,))
        conn.execute("DELETE FROM services WHERE name = ?", (name,))


def replicas(conn: sqlite3.Connection, service: str | None = None) -> list[ReplicaRecord]:
    """Return the replicas of ``service`` (all services when None), by id."""
    if service is None:
        rows = conn.execute("SELECT * FROM replicas ORDER BY service, id")
    else:
        rows = conn.execute("SELECT * FROM replicas WHERE service = ? ORDER BY id", (service,))
    return [_replica(r) for r in rows]


def add_replica(conn: sqlite3.Connection, service: str, version: int, spot: bool = False) -> ReplicaRecord:
    """Create the next replica of ``service`` (PENDING); ids are never reused."""
    now = time.time()
    with transaction(conn):
        top = conn.execute("SELECT MAX(id) FROM replicas WHERE service = ?", (service,)).fetchone()[0]
        replica_id = (top or 0) + 1
        cluster = f"{service}-{replica_id}"
        conn.execute("INSERT INTO replicas (service, id, version, cluster, status, launched_at, status_at, spot)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (service, replica_id, version, cluster, PENDING, now, now, int(spot)))
    return ReplicaRecord(service, replica_id, version, cluster, PENDING, None, now, now, 0, None, spot)


def set_replica(conn: sqlite3.Connection, service: str, replica_id: int, **fields) -> None:
    """Set columns of a replica; a status change stamps ``status_at``."""
    if "status" in fields:
        fields["status_at"] = time.time()
    columns = ", ".join(f"{key} = ?" for key in fields)
    with transaction(conn):
        conn.execute(f"UPDATE replicas SET {columns} WHERE service = ? AND id = ?",
                     (*fields.values(), service, replica_id))


def remove_replica(conn: sqlite3.Connection, service: str, replica_id: int) -> None:
    """Forget a torn-down replica."""
    with transaction(conn):
        conn.execute("DELETE FROM replicas WHERE service = ? AND id = ?", (service, replica_id))
