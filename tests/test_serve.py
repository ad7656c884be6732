"""``skyk serve`` end to end on the local cloud: replicas behind the router, replaced when
they fail, surviving a controller restart, and torn down without leftovers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lifecycle_helpers import kill_until_gone, node_processes, wait_for
from serve_helpers import (
    assert_nothing_left,
    endpoint_host,
    get,
    needs_router,
    serve_json,
    service_row,
    wait_serving,
)
from skyk.serve.state import DOOMED

pytestmark = needs_router

TASK = """\
service:
  readiness_probe: /index.html
  replicas: {replicas}
resources:
  ports: 8080
run: |
  echo "replica $SKYK_SERVE_REPLICA_ID" > index.html
  exec python3 -m http.server 8080 --bind 0.0.0.0
"""


def _ready(skyk, name: str, count: int) -> dict | None:
    [service] = [s for s in serve_json(skyk) if s["name"] == name]
    ready = [r for r in service["replicas"] if r["status"] == "READY"]
    return service if service["status"] == "READY" and len(ready) == count else None


def _get(endpoint: str) -> str:
    return get(f"http://{endpoint}/index.html", timeout=5)


def _serving(endpoint: str, expected: set[str]) -> None:
    wait_serving(endpoint, expected, "/index.html")


@pytest.fixture
def service(serve_web):
    """A 2-replica service ``web``, torn down (and checked) afterwards; its endpoint."""
    endpoint = serve_web(TASK.format(replicas=2))
    assert endpoint.startswith(f"{endpoint_host()}:")
    return endpoint


def test_serve_up_status_requests_and_down(skyk, service):
    assert skyk("serve", "status", "--endpoint", "web").stdout.strip() == service
    wait_for(lambda: _ready(skyk, "web", 2), timeout=60, interval=0.3, what="2/2 replicas READY")
    table = skyk("serve", "status", "web").stdout
    assert "NAME  VERSION  UPTIME  STATUS  REPLICAS  ENDPOINT" in table
    assert "NAME  VERSION  UPTIME  STATUS  REPLICAS  ENDPOINT" in table
    replicas = table.split("Service Replicas\n", 1)[1].splitlines()
    assert replicas[0].split() == ["SERVICE_NAME", "ID", "VERSION", "ENDPOINT", "LAUNCHED", "RESOURCES",
                                   "STATUS", "REGION"]
    # SkyPilot's shape: the cloud's display name around the nodes; the region apart.
    assert len(replicas) == 3
    assert all(row.split()[-4:] == ["1x", "Local(local)", "READY", "local"] for row in replicas[1:]), replicas
    assert "READY   2/2" in table
    _serving(service, {"replica 1", "replica 2"})
    # The router listens on loopback too, whatever address the endpoint is published on.
    _serving(f"127.0.0.1:{service.rsplit(':', 1)[1]}", {"replica 1", "replica 2"})


def test_ready_means_every_router_worker_routes_to_the_replica(skyk, service, isolated_home):
    """READY in ``serve status`` is a promise to clients: each router worker routes there already.

    The state the controller records (what ``serve status`` prints) is read every
    10 ms, so the first moment a replica or the service shows READY is caught;
    right then every worker of the router must list the replica, and requests on
    fresh connections (so both workers answer) must all succeed.
    """
    router = f"http://127.0.0.1:{service.rsplit(':', 1)[1]}"
    checked: set[int] = set()
    service_checked = False
    deadline = time.monotonic() + 120
    while len(checked) < 2 or not service_checked:
        assert time.monotonic() < deadline, "the replicas did not become READY within 120 s"
        with sqlite3.connect(isolated_home / ".skyk" / "state.db") as conn:
            ready = conn.execute("SELECT id, url FROM replicas WHERE service = 'web' AND status = 'READY'"
                                 ).fetchall()
            status = conn.execute("SELECT status FROM services WHERE name = 'web'").fetchone()[0]
        for replica_id, url in ready:
            if replica_id not in checked:
                workers = json.loads(get(f"{router}/-/stats"))["workers"]
                assert len(workers) == 2 and all(url in worker["replicas"] for worker in workers), \
                    f"replica {replica_id} READY, yet a router worker does not route to it: {workers}"
                checked.add(replica_id)
        if status == "READY" and not service_checked:
            for _ in range(10):
                assert _get(service).startswith("replica ")  # a 503 raises
            service_checked = True
        time.sleep(0.01)


def test_a_failed_replica_is_replaced_and_requests_keep_working(skyk, service):
    wait_for(lambda: _ready(skyk, "web", 2), timeout=60, interval=0.3, what="2/2 replicas READY")
    _serving(service, {"replica 1", "replica 2"})

    def replica_1_processes() -> list[int]:
        return [pid for pid in node_processes() if "/local/web-1-" in _home_of(pid)]

    assert replica_1_processes()
    kill_until_gone(replica_1_processes)  # every process of replica 1's node, as a crash would
    # Requests that start after the kill still succeed (the router retries the other replica).
    for _ in range(20):
        assert _get(service) in ("replica 1", "replica 2")
    replaced = wait_for(lambda: (s := _ready(skyk, "web", 2)) and 3 in [r["id"] for r in s["replicas"]]
                        and s, timeout=90, interval=0.5, what="a replacement replica READY")
    # The dead replica stays listed, torn down, with why it failed.
    assert [(r["id"], r["status"] in DOOMED) for r in replaced["replicas"]] == [(1, True), (2, False), (3, False)]
    _serving(service, {"replica 2", "replica 3"})


def _home_of(pid: int) -> str:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return ""
    for item in environ.split(b"\0"):
        if item.startswith(b"HOME="):
            return item[5:].decode()
    return ""


def test_controller_restart_keeps_serving_and_the_same_replicas(skyk, service, isolated_home):
    wait_for(lambda: _ready(skyk, "web", 2), timeout=60, interval=0.3, what="2/2 replicas READY")
    _serving(service, {"replica 1", "replica 2"})
    os.kill(_controller_pid(isolated_home), signal.SIGKILL)
    wait_for(lambda: serve_json(skyk)[0]["status"] == "CONTROLLER_FAILED", what="the dead controller shown")
    for _ in range(10):
        assert _get(service) in ("replica 1", "replica 2")
    status = skyk("serve", "status", "web")
    assert "CONTROLLER_FAILED" in status.stdout and "skyk serve recover web" in status.stderr
    recover = skyk("serve", "recover", "web")
    assert recover.returncode == 0, recover.stderr
    assert skyk("serve", "recover", "web").returncode != 0  # it runs now
    wait_for(lambda: _ready(skyk, "web", 2), timeout=30, what="the restarted controller running the service")
    assert [r["id"] for r in serve_json(skyk)[0]["replicas"]] == [1, 2]
    _serving(service, {"replica 1", "replica 2"})


def test_a_killed_router_comes_back_on_the_same_endpoint(skyk, service, isolated_home):
    wait_for(lambda: _ready(skyk, "web", 2), timeout=60, interval=0.3, what="2/2 replicas READY")
    _serving(service, {"replica 1", "replica 2"})
    router = service_row(isolated_home, "web")["router_pid"]
    os.killpg(router, signal.SIGKILL)  # gunicorn and its workers, as an OOM kill might
    wait_for(lambda: service_row(isolated_home, "web")["router_pid"] not in (None, router),
             timeout=10, what="the controller restarting the router")
    assert skyk("serve", "status", "--endpoint", "web").stdout.strip() == service
    _serving(service, {"replica 1", "replica 2"})


def _controller_pid(home) -> int:
    return service_row(home, "web")["controller_pid"]


def test_serve_bad_input(skyk, tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("run: echo hi\n")
    for args, needle in ((("serve", "up", "-n", "x", str(plain), "-y"), "has no service section"),
                         (("serve", "status", "nope"), "service nope does not exist"),
                         (("serve", "down", "nope", "-y"), "service nope does not exist"),
                         (("serve", "logs", "nope", "--controller"), "service nope does not exist"),
                         (("serve", "up", "-n", "x" * 51, str(plain), "-y"), "longer than 50"),
                         (("serve", "up", "-n", "a;b", str(plain), "-y"), "unsafe")):
        result = skyk(*args)
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("skyk: error:") and needle in last, last
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["soon", "inf", "nan", "-1", "1e400"])
def test_a_bad_serve_setting_fails_serve_up_before_anything_is_recorded(skyk, tmp_path, value):
    task = tmp_path / "web.yaml"
    task.write_text(TASK.format(replicas=1))
    result = skyk("serve", "up", "-n", "web", str(task), "-y", env={"SKYK_SERVE_DRAIN_SECONDS": value})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("skyk: error: SKYK_SERVE_DRAIN_SECONDS must be a number of seconds"), last
    assert serve_json(skyk) == []


CRASHING = """\
service:
  readiness_probe: /health
  replicas: 1
resources:
  ports: 8080
run: |
  echo "loading weights"
  echo "CUDA error: out of memory" >&2
  exit 1
"""


def _replica(skyk, replica_id: int) -> dict | None:
    return next((r for r in serve_json(skyk)[0]["replicas"] if r["id"] == replica_id), None)


def test_a_replica_whose_server_exits_fails_at_once_with_its_exit_code_and_last_lines(skyk, serve_web):
    # The default initial_delay_seconds is 1200: the replica must fail long before that. The long
    # back-off keeps a replacement from launching while the test looks.
    serve_web(CRASHING, SKYK_SERVE_BACKOFF="600")
    failed = wait_for(lambda: (r := _replica(skyk, 1)) and r["status"] == "FAILED" and r,
                      timeout=60, interval=0.3, what="replica 1 FAILED")
    assert "its server exited with code 1" in failed["note"], failed["note"]
    assert "loading weights" in failed["note"] and "CUDA error: out of memory" in failed["note"], failed["note"]
    table = skyk("serve", "status", "web", "-v").stdout
    assert "FAILED" in table and "its server exited with code 1" in table, table
    # Torn down, it stays listed with its note, and its log stays readable.
    wait_for(lambda: node_processes() == {}, timeout=60, interval=0.3, what="replica 1's node torn down")
    assert _replica(skyk, 1)["status"] == "FAILED"
    logs = skyk("serve", "logs", "web", "1", "--no-follow")
    assert logs.returncode == 0, logs.stderr
    assert "loading weights" in logs.stdout and "CUDA error: out of memory" in logs.stdout, logs.stdout


@pytest.mark.parametrize("body, field", [
    ("readiness_probe: {path: /health, timeout_seconds: 10000000000}\n  replicas: 1", "timeout_seconds"),
    ("readiness_probe: {path: /health, initial_delay_seconds: 10000000000}\n  replicas: 1",
     "initial_delay_seconds"),
    ("replicas: 100000000", "replicas"),
    ("replica_policy: {min_replicas: 1, max_replicas: 100000000, target_qps_per_replica: 1}", "max_replicas"),
    ("replica_policy: {min_replicas: 1, max_replicas: 2, target_qps_per_replica: 1,"
     " downscale_delay_seconds: 10000000000}", "downscale_delay_seconds"),
    ("replica_policy: {min_replicas: 1, max_replicas: 2, target_qps_per_replica: 1.0e+300}",
     "target_qps_per_replica"),
])
def test_out_of_range_service_values_are_one_line_errors(skyk, tmp_path, body, field):
    task = tmp_path / "web.yaml"
    task.write_text(f"service:\n  {body}\nresources:\n  ports: 8080\nrun: echo hi\n")
    for args in (("launch", "--dryrun", str(task)), ("serve", "up", "-n", "web", str(task), "-y")):
        result = skyk(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1, (args, result.stdout, result.stderr)
        assert lines[0].startswith("skyk: error:") and field in lines[0] and "hint:" in lines[0], lines[0]
    assert serve_json(skyk) == []


def test_ctrl_c_during_serve_up_says_the_service_keeps_starting(skyk, shared_catalogs, tmp_path, isolated_home):
    task = tmp_path / "web.yaml"
    task.write_text(TASK.format(replicas=1))

    def recorded() -> bool:
        if not (isolated_home / ".skyk" / "state.db").is_file():
            return False  # (connecting would create it)
        try:
            return service_row(isolated_home, "web") is not None
        except sqlite3.Error:  # the database is not there yet
            return False

    proc = subprocess.Popen([sys.executable, "-m", "skyk", "serve", "up", "-n", "web", str(task), "-y"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SKYK_CATALOG_DIR": str(shared_catalogs)})
    endpoint = None
    try:
        wait_for(recorded, timeout=60, interval=0.01, what="service web recorded")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == ("skyk: error: interrupted, but service web keeps starting in the"
                                                " background (hint: remove it with 'skyk serve down web')"), err
        # It did keep starting: its replica becomes ready behind an endpoint.
        wait_for(lambda: _ready(skyk, "web", 1), timeout=90, interval=0.3, what="1/1 replicas READY")
        endpoint = serve_json(skyk)[0]["endpoint"]
        _serving(endpoint, {"replica 1"})
        # An update with an out-of-range value is refused in one line; the service keeps its version.
        bad = tmp_path / "bad.yaml"
        bad.write_text(TASK.format(replicas=1).replace("replicas: 1", "replicas: 100000000"))
        update = skyk("serve", "update", "web", str(bad), "-y")
        assert update.returncode != 0 and len(update.stderr.strip().splitlines()) == 1, update.stderr
        assert "service.replicas" in update.stderr and serve_json(skyk)[0]["version"] == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        down = skyk("serve", "down", "web", "-y", timeout=120)
        assert down.returncode == 0, down.stderr
    assert_nothing_left(skyk, isolated_home, "web", endpoint or "-:0")
