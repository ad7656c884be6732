"""End-to-end tests of what scaling relies on, with a real gunicorn router (two workers).

Requests held while no replica is ready (scale from zero), the per-second
request counts the autoscaler reads, and the passive ejection of a replica
that was just killed.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time

import pytest
import requests
from router_servers import (
    replica_of,
    start_fake_replica,
    start_router,
    stop,
    wait_until,
    write_replicas_file,
)
from skyk_router.balancing import EJECT_S

pytestmark = pytest.mark.slow


def waiting(router) -> int:
    """Requests the router holds now, summed over its workers."""
    return router.stats()["waiting"]


def test_held_request_goes_to_the_replica_that_starts(router, replicas):
    router.set_replicas([], hold_s=60)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(requests.get, f"{router.url}/echo", timeout=90)
        wait_until(lambda: waiting(router) == 1, message="the request is held")
        assert not held.done()
        added = time.monotonic()
        # As the controller would, once the replica it started is ready.
        write_replicas_file(router.replicas_file, [replicas["a"].url], hold_s=60)
        got = held.result(timeout=90)
    assert replica_of(got) == "a"
    # Woken by the refresh that lists the replica (every 0.5 s), not at the end of its hold.
    assert time.monotonic() - added < 30
    wait_until(lambda: waiting(router) == 0, message="no request held any more")


def test_hold_without_a_replica_ends_in_503_after_hold_s(router):
    router.set_replicas([], hold_s=1)
    started = time.monotonic()
    got = requests.get(f"{router.url}/echo", timeout=60)
    elapsed = time.monotonic() - started
    assert got.status_code == 503
    assert got.json()["error"]["message"] == "no ready replica"
    assert got.json()["error"]["hint"].startswith("waited 1 s for a replica to start; ")
    assert "no replica is ready yet" in got.json()["error"]["hint"]
    # The hold counts from the request's arrival, after this client's clock started.
    assert 0.9 <= elapsed < 30


def test_client_leaving_a_hold_ends_it(router, replicas):
    router.set_replicas([], hold_s=60)
    hold_id = f"held-{time.time()}"
    client = socket.create_connection(("127.0.0.1", int(router.url.rsplit(":", 1)[1])))
    try:
        # /hold, should it reach a replica, records when the router lets go of it.
        client.sendall(f"GET /hold?id={hold_id} HTTP/1.1\r\nHost: router\r\n\r\n".encode())
        wait_until(lambda: waiting(router) == 1, message="the request is held")
    finally:
        client.close()
    # Far sooner than its 60 s hold would end.
    wait_until(lambda: waiting(router) == 0, timeout_s=20,
               message="the hold ends when its client leaves")
    # With a replica ready now, a request still held would go to it.
    router.set_replicas([replicas["a"].url])
    time.sleep(1)
    assert hold_id not in replicas["a"].closed()


def counted(report: dict) -> int:
    """The requests in a ``/-/stats`` report's ``requests_by_second``."""
    return sum(count for _, count in report["requests_by_second"])


def test_requests_by_second_add_up_over_workers(tmp_path, replicas):
    # A router of its own: every request it counts is one of this test's.
    router = start_router(tmp_path, workers=2)
    try:
        router.set_replicas([replicas["a"].url])
        first = int(time.time())
        sent = 0

        def both_workers_served() -> bool:
            nonlocal sent
            for _ in range(10):  # a new connection each time: either worker may take it
                assert requests.get(f"{router.url}/echo", timeout=10).status_code == 200
                sent += 1
            workers = router.stats()["workers"]
            return len(workers) == router.workers and all(counted(worker) for worker in workers)

        wait_until(both_workers_served, timeout_s=60, message="both workers served requests")
        last = int(time.time())

        def all_counted() -> dict | None:
            # Other workers' numbers reach the answering worker with their next poll.
            stats = router.stats()
            return stats if counted(stats) == sent else None

        stats = wait_until(all_counted, message="every request counted")
        assert len(stats["workers"]) == 2
        assert stats["requests_last_window"] == sent
        seconds = [second for second, _ in stats["requests_by_second"]]
        assert seconds == sorted(set(seconds))
        assert first <= seconds[0] and seconds[-1] <= last
        # The total adds the workers' counts second by second.
        by_second: dict[int, int] = {}
        for worker in stats["workers"]:
            for second, count in worker["requests_by_second"]:
                by_second[second] = by_second.get(second, 0) + count
        assert [[second, by_second[second]] for second in sorted(by_second)] == \
            stats["requests_by_second"]
    finally:
        stop(router.proc)


@pytest.mark.parametrize("policy", ["round_robin", "least_load"])
def test_a_killed_replica_leaves_rotation_at_its_first_failure(router, policy):
    doomed, survivor = start_fake_replica("doomed"), start_fake_replica("survivor")
    try:
        router.set_replicas([doomed.url, survivor.url], policy=policy)
        stop(doomed.proc)  # killed; the controller has not noticed yet
        before = router.sample("skyk_router_errors_total", kind="connect")
        started = time.monotonic()
        sent = 40
        for _ in range(sent):
            assert replica_of(requests.get(f"{router.url}/echo", timeout=10)) == "survivor"
        elapsed = time.monotonic() - started
        failures = router.sample("skyk_router_errors_total", kind="connect") - before
        # Each worker tries the dead replica first once, then again only once per
        # ejection period; without ejection, about every other request would.
        assert 1 <= failures <= router.workers * (2 + elapsed // EJECT_S)

        def none_in_flight() -> bool:
            in_flight = router.stats()["in_flight"]
            return survivor.url in in_flight and \
                not in_flight.get(doomed.url) and not in_flight[survivor.url]

        wait_until(none_in_flight, message="in-flight counts back to 0")
    finally:
        stop(doomed.proc)
        stop(survivor.proc)
