"""The state database under damage and misuse: damaged rows stay local to themselves,
every other fault is one clear line, and the database and SKYK_HOME are private."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading

import pytest
from lifecycle_helpers import sandboxes, status_json
from skyk.state import db


def _one_line_error(result, *needles):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("skyk: error:"), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def _execute(home, *statements):
    with sqlite3.connect(home / ".skyk" / "state.db") as conn:
        for statement in statements:
            conn.execute(statement)


def test_damaged_cluster_rows_show_as_damaged_and_the_others_keep_working(skyk, isolated_home):
    assert skyk("launch", "-c", "good", "echo hi", "-y").returncode == 0
    _execute(isolated_home,
             "INSERT INTO clusters (name, status, handle, launched_at, status_at)"
             " VALUES ('badjson', 'UP', '{not json', 1, 1)",
             "INSERT INTO clusters (name, status, launched_at, status_at)"
             " VALUES ('badtype', 'UP', 'yesterday', 1)")

    table = skyk("status")
    assert table.returncode == 0, table.stderr
    assert "good" in table.stdout
    assert "DAMAGED (record damaged: handle cannot be read" in table.stdout
    assert "DAMAGED (record damaged: launched_at is 'yesterday'" in table.stdout
    shown = {c["name"]: c["status"] for c in status_json(skyk)}
    assert shown == {"good": "UP", "badjson": "DAMAGED", "badtype": "DAMAGED"}
    assert skyk("status", "-r").returncode == 0
    queue = skyk("queue")
    assert queue.returncode == 0 and "Jobs on cluster good" in queue.stdout, queue.stderr
    _one_line_error(skyk("queue", "badjson"), "cluster badjson is DAMAGED", "down --purge badjson")
    _one_line_error(skyk("launch", "-c", "badjson", "echo hi", "-y"), "record damaged", "--purge")

    # 'stop -a' and 'down -a' act on the healthy cluster and say what they could not.
    _one_line_error(skyk("stop", "-a", "-y"), "2 of 3 clusters were not stopped", "down --purge badjson")
    assert {c["name"]: c["status"] for c in status_json(skyk)}["good"] == "STOPPED"
    _one_line_error(skyk("down", "-a", "-y"), "2 of 3 clusters were not torn down", "down --purge badjson")
    assert {c["name"] for c in status_json(skyk)} == {"badjson", "badtype"}
    purge = skyk("down", "--purge", "badjson", "badtype", "-y")
    assert purge.returncode == 0, purge.stderr
    assert status_json(skyk) == [] and sandboxes(isolated_home) == []


def test_a_damaged_service_row_shows_as_damaged_and_serve_down_removes_it(skyk, isolated_home):
    assert skyk("status").returncode == 0
    _execute(isolated_home,
             "INSERT INTO services (name, version, status, task, created_at) VALUES ('bad', 1, 'READY', '[1', 1)",
             "INSERT INTO services (name, version, status, task, created_at)"
             " VALUES ('typed', 'one', 'READY', '{}', 1)")
    table = skyk("serve", "status")
    assert table.returncode == 0, table.stderr
    assert "Traceback" not in table.stderr
    assert "Service bad: record damaged: task cannot be read" in table.stderr
    assert "Service typed: record damaged: version is 'one'" in table.stderr
    assert {s["name"]: s["status"] for s in json.loads(skyk("serve", "status", "-o", "json").stdout)} == {
        "bad": "DAMAGED", "typed": "DAMAGED"}
    down = skyk("serve", "down", "bad", "typed", "-y")
    assert down.returncode == 0, down.stderr
    assert json.loads(skyk("serve", "status", "-o", "json").stdout) == []


def test_a_dropped_table_is_one_line(skyk, isolated_home):
    assert skyk("status").returncode == 0
    _execute(isolated_home, "DROP TABLE clusters")
    for args in (("status",), ("down", "-a", "-y"), ("queue",)):
        _one_line_error(skyk(*args), "state.db is damaged: no such table: clusters", "move it aside")


def test_skyk_home_being_a_file_is_one_line(skyk, tmp_path):
    home = tmp_path / "not-a-dir"
    home.write_text("")
    for args in (("status",), ("launch", "-c", "x", "echo", "-y")):
        _one_line_error(skyk(*args, env={"SKYK_HOME": str(home)}), f"SKYK_HOME {home} is not a directory")


@pytest.mark.skipif(not shutil.which("unshare") or not shutil.which("mount"), reason="needs unshare and mount")
def test_a_read_only_state_database_is_one_line(skyk, isolated_home):
    assert skyk("status").returncode == 0
    home = isolated_home / ".skyk"
    # A read-only filesystem: root ignores file modes, not that.
    script = (f"mount --bind -o ro {home} {home} && exec {sys.executable} -m skyk launch -c x 'echo' -y")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if "mount" in result.stderr and "skyk:" not in result.stderr:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    _one_line_error(result, "state.db is read-only", "writable")


def test_a_long_locked_state_database_is_one_line(skyk, isolated_home):
    assert skyk("status").returncode == 0
    holder = sqlite3.connect(isolated_home / ".skyk" / "state.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = skyk("launch", "-c", "x", "echo", "-y", env={"SKYK_STATE_LOCK_TIMEOUT": "1"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    _one_line_error(result, "state.db stayed locked by another process for 1s", "SKYK_STATE_LOCK_TIMEOUT")
    assert status_json(skyk) == []


def test_an_emptied_state_database_beside_live_sandboxes_is_reported(skyk, isolated_home):
    assert skyk("launch", "-c", "alive", "echo hi", "-y").returncode == 0
    path = isolated_home / ".skyk" / "state.db"
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(b"")
    [sandbox] = sandboxes(isolated_home)
    _one_line_error(skyk("status"), "state.db is empty, but clusters made by skyk still exist",
                    "restore state.db from a backup")
    _one_line_error(skyk("launch", "-c", "alive", "echo hi", "-y"), "is empty")
    assert path.stat().st_size == 0  # not silently made new
    # Cleaned by the test: the sandbox's record is gone with the database.
    from skyk.builtin.local_cloud import LocalCloud
    from skyk.provision.types import ProvisionAttempt

    name, uid = sandbox.name.rsplit("-", 1)
    LocalCloud().remove_attempt(ProvisionAttempt(name, uid, "local", "local"))
    assert sandboxes(isolated_home) == []
    assert skyk("status").returncode == 0  # an empty database with nothing beside it is new


def test_skyk_home_and_the_state_database_are_created_private(skyk, isolated_home):
    home = isolated_home / ".skyk"
    assert not home.exists()
    assert skyk("status").returncode == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for suffix in ("", "-wal", "-shm"):
        path = home / f"state.db{suffix}"
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_state_database_left_readable_by_others_is_made_private(skyk, isolated_home):
    assert skyk("status").returncode == 0
    path = isolated_home / ".skyk" / "state.db"
    path.chmod(0o644)  # as an older skyk left it, under the usual umask
    assert skyk("status").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_state_database_from_before_attempts_is_upgraded(skyk, isolated_home):
    home = isolated_home / ".skyk"
    home.mkdir()
    old = sqlite3.connect(home / "state.db", isolation_level=None)
    for script in db.MIGRATIONS[:4]:  # the schema before provisioning attempts were recorded
        old.executescript(script)
    old.execute("INSERT INTO clusters (name, status, launched_at, status_at) VALUES ('old', 'INIT', 1, 1)")
    old.execute("PRAGMA user_version = 4")
    old.close()
    # Many processes may open it at once: one migrates, the others wait and see it done.
    results = []
    threads = [threading.Thread(target=lambda: results.append(skyk("status", "-o", "json")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert [c["name"] for c in json.loads(results[0].stdout)] == ["old"]
    with sqlite3.connect(home / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 7
        assert conn.execute("SELECT COUNT(*) FROM managed_jobs").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 0
    status = skyk("status", "-r", "-o", "json")
    assert json.loads(status.stdout)[0]["note"] == "launch was interrupted before any node existed"
    down = skyk("down", "old", "-y")
    assert down.returncode == 0, down.stderr
    assert status_json(skyk) == []


def test_a_ctrl_c_as_a_transaction_begins_leaves_no_write_lock(tmp_path):
    # Python raises a Ctrl-C that arrived while BEGIN ran the moment BEGIN returns.
    class InterruptedAtBegin(sqlite3.Connection):
        def execute(self, sql, *args):
            cursor = super().execute(sql, *args)
            if sql == "BEGIN IMMEDIATE":
                raise KeyboardInterrupt
            return cursor

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None, factory=InterruptedAtBegin)
    with pytest.raises(KeyboardInterrupt), db.transaction(conn):
        pass
    assert not conn.in_transaction
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # 'database is locked' at once if the lock had been kept
    other.execute("ROLLBACK")
