"""``skyk serve`` under steady load: rolling and blue-green updates, a killed replica, a killed
controller and a replica torn down by hand, none of which may fail a request."""

from __future__ import annotations

import os
import signal
import time

import pytest
from lifecycle_helpers import kill_until_gone, node_processes, wait_for
from serve_helpers import (
    SteadyLoad,
    engine_task,
    needs_router,
    published_urls,
    serve_json,
    service_json,
    service_row,
    wait_ready,
    wait_serving,
)

pytestmark = needs_router

SERVICE = "  readiness_probe: /health\n  replicas: {replicas}"


@pytest.fixture
def up(skyk, serve_web):
    """``up(replicas)`` starts service ``web`` of fake engines and returns its endpoint once it serves."""
    def start(replicas: int) -> str:
        endpoint = serve_web(engine_task(SERVICE.format(replicas=replicas)))
        wait_ready(skyk, "web", replicas, version=1)
        wait_serving(endpoint, {f"replica {i} version 1" for i in range(1, replicas + 1)})
        return endpoint

    return start


def _update(skyk, tmp_path, replicas: int, *flags: str) -> float:
    task = tmp_path / "v2.yaml"
    task.write_text(engine_task(SERVICE.format(replicas=replicas), version=2))
    began = time.time()
    result = skyk("serve", "update", "web", str(task), *flags, "-y")
    assert result.returncode == 0, result.stderr
    assert "updating to version 2" in result.stderr
    return began


def test_rolling_update_reaches_version_2_without_a_failed_request(skyk, up, tmp_path):
    endpoint = up(2)
    with SteadyLoad(f"http://{endpoint}/") as load:
        load.wait_count(20)
        _update(skyk, tmp_path, 2)
        wait_ready(skyk, "web", 2, timeout=120, version=2)
        switched = time.time() + 1.0  # the router's workers poll every 0.5 s
        time.sleep(1.5)
        load.wait_count(20)
    assert load.failures() == [], load.failures()[:3]
    assert load.bodies(after=switched) == {"replica 3 version 2", "replica 4 version 2"}
    assert {"replica 1 version 1", "replica 2 version 1"} <= load.bodies()
    [service] = serve_json(skyk)
    assert service["version"] == 2 and service["status"] == "READY"


def test_blue_green_update_switches_all_traffic_at_once(skyk, up, tmp_path):
    endpoint = up(2)
    with SteadyLoad(f"http://{endpoint}/") as load:
        load.wait_count(20)
        _update(skyk, tmp_path, 2, "--mode", "blue_green")
        wait_ready(skyk, "web", 2, timeout=120, version=2)
        time.sleep(1.5)
        load.wait_count(20)
    assert load.failures() == [], load.failures()[:3]
    first_v2 = min(o.started for o in load.outcomes if o.body and "version 2" in o.body)
    # Until the switch only version 1 answers; from a moment after it (router workers poll
    # every 0.5 s) only version 2, and both of its replicas from the start.
    assert {b for b in load.bodies() if "version 2" not in b} == {"replica 1 version 1", "replica 2 version 1"}
    assert not [o for o in load.outcomes if o.body and "version 1" in o.body and o.started > first_v2 + 1.0]
    early_v2 = {o.body for o in load.outcomes if o.body and "version 2" in o.body and o.started < first_v2 + 1.0}
    assert len(early_v2) == 2, early_v2


def _replica_pids(replica_id: int) -> list[int]:
    """The processes of replica ``replica_id``'s node (its home is .../local/web-ID-.../node0)."""
    found = []
    for pid in node_processes():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if f"/local/web-{replica_id}-".encode() in environ:
            found.append(pid)
    return found


def test_faults_under_steady_load_fail_no_request(skyk, up, isolated_home):
    endpoint = up(3)
    url_1 = next(r["url"] for r in service_json(skyk, "web")["replicas"] if r["id"] == 1)
    with SteadyLoad(f"http://{endpoint}/") as load:
        load.wait_count(30)

        # A replica dies: it leaves rotation within 2 s and a replacement becomes ready.
        assert _replica_pids(1)
        killed = time.time()
        kill_until_gone(lambda: _replica_pids(1))
        wait_for(lambda: url_1 not in published_urls(isolated_home, "web"), timeout=10, interval=0.02,
                 what="the dead replica out of the router's list")
        assert time.time() - killed < 2.0, f"left rotation after {time.time() - killed:.2f}s"
        ready = wait_ready(skyk, "web", 3, timeout=120)
        assert sorted(r["id"] for r in ready) == [2, 3, 4]
        load.wait_count(30)
        assert load.failures(after=killed) == [], load.failures(after=killed)[:3]

        # The controller dies: the endpoint keeps serving; recovered, it keeps the same replicas.
        os.kill(service_row(isolated_home, "web")["controller_pid"], signal.SIGKILL)
        wait_for(lambda: service_json(skyk, "web")["status"] == "CONTROLLER_FAILED", what="a dead controller")
        load.wait_count(30)
        recover = skyk("serve", "recover", "web")
        assert recover.returncode == 0, recover.stderr
        time.sleep(3)  # a few ticks of the new controller
        assert sorted(r["id"] for r in wait_ready(skyk, "web", 3)) == [2, 3, 4]

        # A replica torn down by hand is drained first, then replaced.
        down = skyk("serve", "down", "web", "--replica-id", "2", "-y", timeout=120)
        assert down.returncode == 0, down.stderr
        assert 2 not in [r["id"] for r in service_json(skyk, "web")["replicas"]]
        assert sorted(r["id"] for r in wait_ready(skyk, "web", 3, timeout=120)) == [3, 4, 5]
        load.wait_count(30)
    assert load.failures() == [] or all(o.started < killed for o in load.failures()), load.failures()[:3]
    assert {"replica 5 version 1", "replica 3 version 1", "replica 4 version 1"} <= load.bodies()


def test_a_version_that_never_becomes_ready_backs_off_and_the_old_one_serves(skyk, up, tmp_path):
    endpoint = up(2)
    task = tmp_path / "broken.yaml"
    task.write_text(engine_task("  readiness_probe: {path: /health, initial_delay_seconds: 2}\n  replicas: 2",
                                version=2, HEALTHY="0"))
    with SteadyLoad(f"http://{endpoint}/") as load:
        result = skyk("serve", "update", "web", str(task), "-y")
        assert result.returncode == 0, result.stderr
        time.sleep(20)
        load.wait_count(20)
    assert load.failures() == [], load.failures()[:3]
    assert load.bodies() == {"replica 1 version 1", "replica 2 version 1"}
    service = service_json(skyk, "web")
    assert service["status"] == "READY" and service["version"] == 2
    assert sorted(r["id"] for r in service["replicas"] if r["version"] == 1 and r["status"] == "READY") == [1, 2]
    # Two replicas failed their initial delay, then launches backed off (5 s, then 10 s, ...) instead
    # of looping: in 20 s at most 3 rounds of 2 replicas were tried.
    log = (tmp_path / "home" / ".skyk" / "serve" / "web" / "controller.log").read_text()
    assert "not ready after 2s" in log
    launched = log.count("(version 2, on-demand): launching")
    assert 2 <= launched <= 3 * 2, launched


def test_a_rolling_update_that_changes_the_probe_fails_no_request(skyk, serve_web, tmp_path):
    # Each version's engine answers only its own probe path (/health/V) with 200: probing version 1's
    # replicas with version 2's probe would take them all out of rotation.
    probe = "  readiness_probe: /health/{v}\n  replicas: 2"
    endpoint = serve_web(engine_task(probe.format(v=1)))
    wait_ready(skyk, "web", 2, version=1)
    wait_serving(endpoint, {"replica 1 version 1", "replica 2 version 1"})
    task = tmp_path / "v2.yaml"
    task.write_text(engine_task(probe.format(v=2), version=2))
    with SteadyLoad(f"http://{endpoint}/") as load:
        load.wait_count(20)
        result = skyk("serve", "update", "web", str(task), "-y")
        assert result.returncode == 0, result.stderr
        wait_ready(skyk, "web", 2, timeout=120, version=2)
        load.wait_count(20)
    assert load.failures() == [], load.failures()[:3]
    assert {"replica 1 version 1", "replica 2 version 1", "replica 3 version 2", "replica 4 version 2"} \
        <= load.bodies()
    # The retired replicas' logs stay readable after their clusters went.
    for replica_id in (1, 2):
        logs = skyk("serve", "logs", "web", str(replica_id), "--no-follow")
        assert logs.returncode == 0, logs.stderr
        assert f"replica {replica_id} version 1 listening on port 8080" in logs.stdout, logs.stdout
