"""Buckets skyk made (``skyk storage ls``), and the buckets each cluster mounts."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass

from skyk.state import rows
from skyk.state.db import transaction

#: Made; its local source is being uploaded.
INIT = "INIT"
#: Made and filled.
READY = "READY"
#: Its upload failed part way; the bucket exists.
UPLOAD_FAILED = "UPLOAD_FAILED"
#: Deleting it failed; the bucket may still exist.
DELETE_FAILED = "DELETE_FAILED"
#: Never stored: the row does not hold what skyk wrote.
DAMAGED = "DAMAGED"


@dataclass(frozen=True)
class StorageRecord:
    """A bucket skyk made in the user's account."""

    store: str
    name: str
    #: the local paths it was filled from
    source: list[str]
    region: str | None
    created_at: float
    status: str
    persistent: bool
    #: the cluster whose ``down`` deletes it (a bucket that is not persistent), if any
    cluster: str | None
    note: str | None = None


@dataclass(frozen=True)
class MountRecord:
    """A bucket a cluster mounts (or copied) at ``dest``."""

    dest: str
    store: str
    bucket: str
    prefix: str
    mode: str


def _record(row: sqlite3.Row) -> StorageRecord:
    try:
        return StorageRecord(
            rows.value(row, "store", str), rows.value(row, "name", str),
            rows.decoded(row, "source", json.loads, optional=True) or [],
            rows.value(row, "region", str, optional=True), rows.value(row, "created_at", float, int),
            rows.value(row, "status", str), bool(rows.value(row, "persistent", int)),
            rows.value(row, "cluster", str, optional=True))
    except rows.DamagedRow as exc:
        return StorageRecord(str(row["store"]), str(row["name"]), [], None, 0.0, DAMAGED, True, None,
                             note=f"damaged record: {exc}")


def list_storage(conn: sqlite3.Connection) -> list[StorageRecord]:
    """Every bucket skyk made, newest first."""
    found = conn.execute("SELECT * FROM storage ORDER BY created_at DESC, name").fetchall()
    return [_record(r) for r in found]


def get(conn: sqlite3.Connection, store: str, name: str) -> StorageRecord | None:
    """The bucket ``name`` of ``store`` that skyk made, or None."""
    row = conn.execute("SELECT * FROM storage WHERE store = ? AND name = ?", (store, name)).fetchone()
    return _record(row) if row else None


def add(conn: sqlite3.Connection, store: str, name: str, source: list[str], region: str | None,
        persistent: bool, cluster: str | None) -> None:
    """Remember a bucket skyk is making, before it asks the store (status INIT)."""
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO storage (store, name, source, region, created_at, status,"
                     " persistent, cluster) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (store, name, json.dumps(source), region, time.time(), INIT, int(persistent),
                      None if persistent else cluster))


def set_status(conn: sqlite3.Connection, store: str, name: str, status: str) -> None:
    """Change a bucket's status."""
    with transaction(conn):
        conn.execute("UPDATE storage SET status = ? WHERE store = ? AND name = ?", (status, store, name))


def set_cluster(conn: sqlite3.Connection, store: str, name: str, cluster: str) -> None:
    """Make ``cluster`` the one whose ``down`` deletes the bucket."""
    with transaction(conn):
        conn.execute("UPDATE storage SET cluster = ? WHERE store = ? AND name = ?", (cluster, store, name))


def remove(conn: sqlite3.Connection, store: str, name: str) -> None:
    """Forget a deleted bucket."""
    with transaction(conn):
        conn.execute("DELETE FROM storage WHERE store = ? AND name = ?", (store, name))


def of_cluster(conn: sqlite3.Connection, cluster: str) -> list[StorageRecord]:
    """The buckets deleted with ``cluster`` (made for it, not persistent)."""
    found = conn.execute("SELECT * FROM storage WHERE cluster = ?", (cluster,)).fetchall()
    return [_record(r) for r in found]


def add_mounts(conn: sqlite3.Connection, cluster: str, mounts: list[MountRecord]) -> None:
    """Remember what ``cluster`` mounts (a later mount at the same path replaces the earlier)."""
    with transaction(conn):
        conn.executemany("INSERT OR REPLACE INTO cluster_mounts (cluster, dest, store, bucket, prefix, mode)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         [(cluster, m.dest, m.store, m.bucket, m.prefix, m.mode) for m in mounts])


def mounts(conn: sqlite3.Connection, cluster: str) -> list[MountRecord]:
    """What ``cluster`` mounts, by destination."""
    found = conn.execute("SELECT dest, store, bucket, prefix, mode FROM cluster_mounts WHERE cluster = ?"
                         " ORDER BY dest", (cluster,)).fetchall()
    return [MountRecord(*row) for row in found]


def users(conn: sqlite3.Connection, store: str, name: str) -> list[str]:
    """The clusters that mount bucket ``name`` of ``store``."""
    found = conn.execute("SELECT DISTINCT cluster FROM cluster_mounts WHERE store = ? AND bucket = ?"
                         " ORDER BY cluster", (store, name)).fetchall()
    return [row[0] for row in found]
