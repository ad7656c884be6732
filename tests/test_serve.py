"""``skyk serve`` end to end on the local cloud: replicas behind the router, replaced when
they fail, surviving a controller restart, and torn down without leftovers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from lifecycle_helpers import kill_until_gone, node_processes, wait_for
from serve_helpers import endpoint_host, get, needs_router, serve_json, service_row, wait_serving

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
    assert "SERVICE_NAME  ID  VERSION  ENDPOINT" in table and "INFRA" in table and "RESOURCES" in table
    assert "READY   2/2" in table and "local/local" in table
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
    replaced = wait_for(lambda: (s := _ready(skyk, "web", 2)) and 1 not in [r["id"] for r in s["replicas"]]
                        and s, timeout=90, interval=0.5, what="a replacement replica READY")
    assert [r["id"] for r in replaced["replicas"]] == [2, 3]
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


def test_a_bad_serve_setting_fails_serve_up_before_anything_is_recorded(skyk, tmp_path):
    task = tmp_path / "web.yaml"
    task.write_text(TASK.format(replicas=1))
    result = skyk("serve", "up", "-n", "web", str(task), "-y", env={"SKYK_SERVE_DRAIN_SECONDS": "soon"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("skyk: error: SKYK_SERVE_DRAIN_SECONDS must be a number of seconds"), last
    assert serve_json(skyk) == []
