"""The state database under damage and misuse: damaged rows stay local to themselves."""

from __future__ import annotations

import json
import sqlite3

from lifecycle_helpers import sandboxes, status_json


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

    # 'down -a' takes the healthy cluster down and says what it could not.
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
