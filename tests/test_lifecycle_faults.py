"""Concurrency, interrupted launches and bad input on the cluster commands."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from lifecycle_helpers import (
    cmdlines,
    kill_until_gone,
    netns_available,
    node_processes,
    sandboxes,
    status_json,
    wait_for,
)


def test_twenty_parallel_launch_and_down_keep_the_state_sound(shared_catalogs, isolated_home):
    env = dict(os.environ, SKYK_CATALOG_DIR=str(shared_catalogs))
    script = (f"set -e; {sys.executable} -m skyk launch -c p$I -d 'echo hi' -y;"
              f" {sys.executable} -m skyk status -o json > /dev/null; {sys.executable} -m skyk down p$I -y")
    procs = [subprocess.Popen(["bash", "-c", script], env=dict(env, I=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(20)]
    outcomes = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    failed = [err for code, err in outcomes if code != 0]
    assert not failed, failed[0]
    db = isolated_home / ".skyk" / "state.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM clusters").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == 20
    assert node_processes() == {}
    assert sandboxes(isolated_home) == []


@pytest.mark.parametrize("hang", ["FLAKY_WAIT_HANG", "FLAKY_HANG"])
def test_killed_launch_is_reported_by_status_refresh_and_cleaned_by_down(skyk, shared_catalogs,
                                                                         isolated_home, hang):
    env = dict(os.environ, SKYK_CATALOG_DIR=str(shared_catalogs), **{hang: "flaky-east-1a" if
                                                                       hang == "FLAKY_HANG" else "1"})
    proc = subprocess.Popen([sys.executable, "-m", "skyk", "launch", "-c", "killed", "--cloud", "flaky",
                             "echo never", "-y"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        if hang == "FLAKY_WAIT_HANG":
            wait_for(lambda: sandboxes(isolated_home), what="nodes to exist")
        wait_for(lambda: status_json(skyk), what="the cluster record")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    refreshed = skyk("status", "-r", "-o", "json")
    assert refreshed.returncode == 0, refreshed.stderr
    [cluster] = [c for c in __import__("json").loads(refreshed.stdout)]
    assert cluster["status"] == "INIT" and cluster["note"]
    down = skyk("down", "killed", "-y")
    assert down.returncode == 0, down.stderr
    assert status_json(skyk) == []
    assert sandboxes(isolated_home) == []
    assert node_processes() == {}


def test_processes_killed_from_outside_show_in_refresh_and_down_cleans(skyk, isolated_home):
    assert skyk("launch", "-c", "victim", "-d", "sleep 300", "-y").returncode == 0
    wait_for(lambda: any("sleep" in c for c in cmdlines(node_processes())), what="the job running")
    kill_until_gone(node_processes)
    [cluster] = __import__("json").loads(skyk("status", "-r", "-o", "json").stdout)
    assert cluster["status"] == "INIT" and "agent" in cluster["note"]
    assert "INIT" in skyk("status").stdout
    assert skyk("down", "victim", "-y").returncode == 0
    assert status_json(skyk) == [] and sandboxes(isolated_home) == []


def _one_line_error(result, *needles):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("skyk: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.mark.parametrize("name", ["a;rm -rf ~", "$(touch x)", "a b", "x" * 64, "bad-", "../x"])
def test_unsafe_cluster_names_are_refused(skyk, name):
    for args in (("launch", "-c", name, "echo hi", "-y"), ("exec", name, "echo hi"), ("logs", name),
                 ("down", name, "-y")):
        result = skyk(*args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
    _one_line_error(skyk("launch", "-c", name, "echo", "-y"), "unsafe cluster name")
    assert status_json(skyk) == []


def test_unknown_clusters_and_jobs(skyk):
    _one_line_error(skyk("exec", "nope", "echo hi"), "cluster nope does not exist", "skyk status")
    _one_line_error(skyk("logs", "nope"), "cluster nope does not exist")
    _one_line_error(skyk("down", "nope", "-y"), "cluster nope does not exist")
    _one_line_error(skyk("status", "--ip", "nope"), "cluster nope does not exist")
    assert skyk("launch", "-c", "known", "echo hi", "-y").returncode == 0
    try:
        _one_line_error(skyk("logs", "known", "7"), "no job 7")
        _one_line_error(skyk("cancel", "known", "7"), "no job 7")
        _one_line_error(skyk("exec", "knwon", "echo"), "did you mean known")
    finally:
        skyk("down", "known", "-y")


def test_missing_workdir_and_file_mount_sources(skyk, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("workdir: ./no-such-dir\nrun: echo hi\n")
    _one_line_error(skyk("launch", "-c", "w", str(task), "-y", cwd=tmp_path), "workdir", "no-such-dir")
    task.write_text("file_mounts:\n  ~/data: ./missing.txt\nrun: echo hi\n")
    _one_line_error(skyk("launch", "-c", "w", str(task), "-y", cwd=tmp_path), "missing.txt does not exist")
    task.write_text("file_mounts:\n  /etc/skyk-test: ./t.yaml\nrun: echo hi\n")
    _one_line_error(skyk("launch", "-c", "w", str(task), "-y", cwd=tmp_path), "outside its sandbox")
    assert status_json(skyk) == []


def test_workdir_and_file_mounts_reach_every_node(skyk, tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "main.sh").write_text("echo from-workdir\n")
    (tmp_path / "data.txt").write_text("payload\n")
    task = tmp_path / "t.yaml"
    task.write_text("workdir: ./code\nnum_nodes: 2\nfile_mounts:\n  ~/in/data.txt: ./data.txt\n"
                    "run: bash main.sh && cat ~/in/data.txt\n")
    result = skyk("launch", "-c", "files", str(task), "-y", cwd=tmp_path)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("from-workdir") == 2 and result.stdout.count("payload") == 2
    finally:
        skyk("down", "files", "-y")


def test_a_failing_run_shows_its_exit_code(skyk):
    result = skyk("launch", "-c", "fails", "echo before; exit 3", "-y")
    try:
        _one_line_error(result, "job 1 on cluster fails FAILED (exit code 3)", "skyk logs fails 1")
        assert "before" in result.stdout
        jobs = __import__("json").loads(skyk("queue", "fails", "-o", "json").stdout)["fails"]
        assert (jobs[0]["status"], jobs[0]["exit_code"]) == ("FAILED", 3)
        _one_line_error(skyk("exec", "fails", "false"), "FAILED (exit code 1)")
        setup = skyk("launch", "-c", "fails", "--env", "X=1", "echo hi", "-y")
        assert setup.returncode == 0
    finally:
        skyk("down", "fails", "-y")


def test_relaunch_on_a_cluster_that_cannot_fit_the_task_is_refused(skyk):
    assert skyk("launch", "-c", "small", "echo hi", "-y").returncode == 0
    try:
        _one_line_error(skyk("launch", "-c", "small", "--gpus", "H100:8", "echo hi", "-y"),
                        "does not have the resources", "skyk down small")
        _one_line_error(skyk("launch", "-c", "small", "--num-nodes", "3", "echo hi", "-y"),
                        "does not have the resources")
        again = skyk("launch", "-c", "small", "--cloud", "local", "echo reused", "-y")
        assert again.returncode == 0 and "reused" in again.stdout and "Reusing" in again.stderr
    finally:
        skyk("down", "small", "-y")


def test_state_database_is_versioned_and_damage_is_one_line(skyk, isolated_home):
    assert skyk("status").returncode == 0
    db = isolated_home / ".skyk" / "state.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("PRAGMA user_version = 999")
    _one_line_error(skyk("status"), "schema version 999", "upgrade skyk")
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            path.unlink()
    db.write_bytes(b"this is not a database" * 100)
    _one_line_error(skyk("status"), "state database", "is unusable", "move it aside")


# --- a dead or stopped node agent ----------------------------------------------------------------

def _head_home(isolated_home, name: str):
    [home] = (isolated_home / ".skyk" / "local").glob(f"{name}-*/node0")
    return home


def _agent_pid(home) -> int:
    return int(wait_for(lambda: (home / ".skyk" / "agent.pid").is_file()
                        and (home / ".skyk" / "agent.pid").read_text().strip(), what="the agent's pid"))


def _kill_agent(home) -> int:
    pid = _agent_pid(home)
    os.kill(pid, signal.SIGKILL)
    # The pid file stays behind a SIGKILL: wait for the process itself (gone, or a zombie).
    wait_for(lambda: pid not in node_processes(), what="the agent daemon to die")
    return pid


@pytest.mark.parametrize("refresh_first", [True, False])
def test_launch_on_a_cluster_whose_agent_was_killed_restarts_it_and_keeps_the_node(
        skyk, isolated_home, refresh_first):
    first = skyk("launch", "-c", "keep", "echo kept > ~/kept.txt", "-y")
    assert first.returncode == 0, first.stderr
    home = _head_home(isolated_home, "keep")
    old = _kill_agent(home)
    if refresh_first:
        [cluster] = json.loads(skyk("status", "-r", "-o", "json").stdout)
        assert cluster["status"] == "INIT" and "agent" in cluster["note"]
    # Detached, so a job that never starts fails the test by the poll below, not by a hang.
    again = skyk("launch", "-c", "keep", "-d", "cat ~/kept.txt", "-y")
    assert again.returncode == 0, again.stderr
    assert "Cleaning up" not in again.stderr + again.stdout
    assert (home / "kept.txt").read_text() == "kept\n"  # the node and its files are the same
    wait_for(lambda: json.loads(skyk("queue", "keep", "-o", "json").stdout)["keep"][0]["status"]
             == "SUCCEEDED", timeout=60, what="the new job to run on the restarted agent")
    assert skyk("logs", "keep", "2").stdout == "kept\n"
    assert _agent_pid(home) != old
    [cluster] = json.loads(skyk("status", "-r", "-o", "json").stdout)
    assert cluster["status"] == "UP"
    assert skyk("down", "keep", "-y").returncode == 0


def test_a_stopped_agent_is_reported_as_not_answering(skyk, isolated_home):
    assert skyk("launch", "-c", "frozen", "echo hi", "-y").returncode == 0
    pid = _agent_pid(_head_home(isolated_home, "frozen"))
    os.kill(pid, signal.SIGSTOP)
    try:
        refreshed = skyk("status", "-r", "-o", "json", timeout=120)
        assert refreshed.returncode == 0, refreshed.stderr
        [cluster] = json.loads(refreshed.stdout)
        assert cluster["status"] == "INIT" and "does not answer" in cluster["note"], cluster
        assert str(pid) in cluster["note"]
        # A launch neither tears the node down nor starts a second agent beside it.
        _one_line_error(skyk("launch", "-c", "frozen", "echo again", "-y", timeout=120),
                        "does not answer", "skyk stop frozen")
    finally:
        os.kill(pid, signal.SIGCONT)
    [cluster] = json.loads(skyk("status", "-r", "-o", "json", timeout=120).stdout)
    assert cluster["status"] == "UP" and cluster["note"] is None
    assert skyk("down", "frozen", "-y").returncode == 0


@pytest.mark.parametrize("output", ["table", "json"])
def test_queue_shows_the_other_clusters_when_one_agent_fails(skyk, isolated_home, output):
    for name in ("alive", "broken"):
        result = skyk("launch", "-c", name, f"echo {name}", "-y")
        assert result.returncode == 0, result.stderr
    # The agent is gone from the broken cluster's head: its process and its package.
    home = _head_home(isolated_home, "broken")
    _kill_agent(home)
    shutil.rmtree(home / ".skyk" / "agent")
    result = skyk("queue", "-o", output)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skyk: error: cluster broken:"), result.stderr
    assert "Traceback" not in result.stderr
    if output == "json":
        shown = json.loads(result.stdout)
        assert list(shown) == ["alive"] and shown["alive"][0]["status"] == "SUCCEEDED"
    else:
        assert "Jobs on cluster alive:" in result.stdout and "SUCCEEDED" in result.stdout
        assert "broken" not in result.stdout
    assert skyk("down", "-a", "-y").returncode == 0


_SLOW_IP = """#!/bin/bash
# 'ip' as the local cloud calls it, but the batch that adds namespaces waits for
# $GATE/go: 'before' making them, or 'after' (so a launch can be killed there).
[ "$*" = "-batch -" ] || exec {ip} "$@"
script=$(cat)
case "$script" in *"netns add"*) ;; *) printf '%s\\n' "$script" | exec {ip} "$@" ;; esac
if [ "$MOMENT" = after ]; then printf '%s\\n' "$script" | {ip} "$@" || exit; fi
touch "$GATE/reached"
while [ ! -e "$GATE/go" ]; do sleep 0.05; done
exit 1
"""


@pytest.mark.skipif(not netns_available(), reason="needs root and ip for network namespaces")
@pytest.mark.parametrize("moment", ["before", "after"])
def test_launch_killed_while_the_cloud_makes_nodes_is_found_and_removed(skyk, shared_catalogs,
                                                                        isolated_home, tmp_path, moment):
    # Killed inside provision(): no handle was ever recorded, only the attempt.
    gate = tmp_path / "gate"
    (gate / "bin").mkdir(parents=True)
    shim = gate / "bin" / "ip"
    shim.write_text(_SLOW_IP.format(ip=shutil.which("ip")))
    shim.chmod(0o755)
    env = dict(os.environ, SKYK_CATALOG_DIR=str(shared_catalogs), GATE=str(gate), MOMENT=moment,
               PATH=f"{gate / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.Popen([sys.executable, "-m", "skyk", "launch", "-c", "cut", "echo never", "-y"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (gate / "reached").exists() or proc.poll() is not None,
                 timeout=60, what="provisioning to reach the namespaces")
        assert proc.poll() is None, proc.communicate()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        (gate / "go").touch()  # the shim exits without making anything more
    [root] = sandboxes(isolated_home)
    uid = root.name.rsplit("-", 1)[1]
    assert _claims_under(root), "the nodes' addresses were claimed"
    assert bool(_namespaces(uid)) == (moment == "after")

    [cluster] = json.loads(skyk("status", "-r", "-o", "json").stdout)
    assert cluster["status"] == "INIT"
    assert "interrupted while provisioning" in cluster["note"] and str(root) in cluster["note"]
    assert "cut" in skyk("status", "-r").stdout
    down = skyk("down", "cut", "-y")
    assert down.returncode == 0, down.stderr
    assert status_json(skyk) == []
    assert sandboxes(isolated_home) == []
    assert _namespaces(uid) == []
    assert _claims_under(root) == {}


def _namespaces(uid: str) -> list[str]:
    netns = Path("/run/netns")
    return [p.name for p in netns.iterdir() if p.name.startswith(f"skyk-{uid}-")] if netns.is_dir() else []


def _claims_under(root: Path) -> dict:
    registry = Path("/run/skyk-local/addresses.json")
    data = json.loads(registry.read_text()) if registry.exists() else {}
    return {a: c for a, c in data.get("addresses", {}).items() if Path(c["owner"]).parent == root}


@pytest.mark.skipif(not netns_available(), reason="needs root and ip for network namespaces")
def test_a_cluster_whose_nodes_went_is_kept_while_an_abandoned_attempt_left_something(skyk, isolated_home):
    assert skyk("launch", "-c", "gone", "echo hi", "-y").returncode == 0
    [root] = sandboxes(isolated_home)
    uid = root.name.rsplit("-", 1)[1]
    # An attempt the launch gave up on (it timed out, and failover moved on) made a node directory.
    leftover = root.parent / "gone-0badbeef"
    (leftover / "node0").mkdir(parents=True)
    with sqlite3.connect(isolated_home / ".skyk" / "state.db") as conn:
        conn.execute("INSERT INTO attempts (cluster, uid, cloud, region, zone, started_at)"
                     " VALUES ('gone', '0badbeef', 'local', 'local', NULL, 1)")
    # The cluster's own nodes disappear outside skyk.
    assert skyk("stop", "gone", "-y").returncode == 0
    for node in root.glob("node*"):
        shutil.rmtree(node)

    [cluster] = json.loads(skyk("status", "-r", "-o", "json").stdout)
    assert cluster["status"] == "INIT" and str(leftover) in cluster["note"], cluster
    down = skyk("down", "gone", "-y")
    assert down.returncode == 0, down.stderr
    assert status_json(skyk) == [] and sandboxes(isolated_home) == []
    assert _namespaces(uid) == [] and _claims_under(root) == {}
