"""A replica dying costs no request: a real gunicorn router, real replica processes.

32 clients send requests without pause while one replica after another is
killed with SIGKILL (and started again on its port). A request in flight on
the killed replica got no byte of its answer, so the router must send it to
another replica: every request gets its 200, none waits until its timeout.
"""

from __future__ import annotations

import collections
import concurrent.futures
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import pytest
import requests
from router_servers import (
    HERE,
    FakeReplica,
    free_loopback_port,
    start_fake_replica,
    start_router,
    start_server,
    stop,
    wait_until,
)

pytestmark = pytest.mark.slow

CLIENTS = 32
KILLS = 5
#: Far longer than any answer takes, even on a busy machine: a request this slow hung.
HUNG_AFTER_S = 30.0


def restart(replica: FakeReplica) -> FakeReplica:
    """Start ``replica`` again on the port it had, once its process is gone."""
    replica.proc.wait()
    port = replica.url.rsplit(":", 1)[1]
    server = start_server([sys.executable, str(HERE / "fake_replica.py"), "--port", port,
                           "--name", replica.name], replica.url, "/echo", f"replica {replica.name}")
    return FakeReplica(replica.name, server.url, server.proc)


def test_killing_replicas_under_load_fails_no_request(tmp_path):
    replicas = [start_fake_replica(name) for name in ("a", "b", "c")]
    router = start_router(tmp_path)
    stopping = threading.Event()
    outcomes: list[tuple[float, str]] = []  # (seconds, "ok" or what went wrong)
    lock = threading.Lock()

    def client(index: int) -> None:
        # Kept-alive client connections, as an OpenAI SDK's; the replica
        # takes a moment, so requests are in flight on it when it dies.
        # Half the requests close their replica connection, so the router
        # also opens new connections to the replica as it dies.
        path = "/slow?delay=0.02" if index % 2 else "/close"
        with requests.Session() as session:
            while not stopping.is_set():
                started = time.monotonic()
                try:
                    got = session.post(f"{router.url}{path}", json={"client": index},
                                       timeout=HUNG_AFTER_S)
                    outcome = "ok" if got.status_code == 200 else f"status {got.status_code}: {got.text}"
                except requests.Timeout:
                    outcome = "hung"
                except requests.RequestException as error:
                    outcome = f"failed: {error!r}"
                with lock:
                    outcomes.append((time.monotonic() - started, outcome))

    def answered() -> int:
        with lock:
            return len(outcomes)

    def wait_for_more(count: int) -> None:
        target = answered() + count
        deadline = time.monotonic() + 60
        while answered() < target:
            assert time.monotonic() < deadline, "the load stalled"
            time.sleep(0.05)

    try:
        router.set_replicas([replica.url for replica in replicas])
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            for index in range(CLIENTS):
                pool.submit(client, index)
            try:
                wait_for_more(200)
                for kill in range(KILLS):
                    victim = replicas[kill % len(replicas)]
                    victim.proc.send_signal(signal.SIGKILL)
                    wait_for_more(300)  # the router carries on without it
                    replicas[kill % len(replicas)] = restart(victim)
                    wait_for_more(100)
            finally:
                stopping.set()
    finally:
        stop(router.proc)
        for replica in replicas:
            stop(replica.proc)

    failed = [outcome for _, outcome in outcomes if outcome != "ok"]
    seconds = sorted(duration for duration, _ in outcomes)
    p50, p99 = statistics.quantiles(seconds, n=100)[49], statistics.quantiles(seconds, n=100)[98]
    print(f"\n{len(outcomes)} requests, {KILLS} replicas killed: {len(failed)} failed or hung; "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {seconds[-1] * 1000:.1f} ms")
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"


def test_a_connection_lost_before_the_request_was_sent_is_answered(tmp_path):
    """A replica's connection that breaks between connect and the request's write.

    Each request is answered (here 503: no replica could take it), promptly;
    none is left waiting for an answer that never comes.
    """
    port = free_loopback_port()
    resetting = subprocess.Popen([sys.executable, str(HERE / "resetting_server.py"),
                                  "--port", str(port)])
    router = start_router(tmp_path)
    try:
        wait_until(lambda: _accepts(port), message="resetting server up")
        router.set_replicas([f"http://127.0.0.1:{port}"])

        def one(_: int) -> str:
            try:
                got = requests.get(f"{router.url}/echo", timeout=HUNG_AFTER_S)
            except requests.Timeout:
                return "hung"
            return "503" if got.status_code == 503 else f"{got.status_code}: {got.text}"

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(one, range(1000)))
    finally:
        stop(router.proc)
        stop(resetting)
    assert answers.count("503") == len(answers), collections.Counter(answers)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_replica_killed_mid_answer_closes_the_clients_connection_at_once(tmp_path):
    """After the first byte nothing can be retried: the client must learn of the break at once."""
    replica = start_fake_replica("streaming")
    router = start_router(tmp_path)
    try:
        router.set_replicas([replica.url])
        # 1000 events 50 ms apart: 50 s, unless the replica dies.
        with requests.get(f"{router.url}/sse?events=1000&interval=0.05", stream=True,
                          timeout=HUNG_AFTER_S) as got:
            lines = got.iter_lines(chunk_size=None)
            assert next(lines) == b"data: 0"
            replica.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                for _ in lines:
                    pass
        assert time.monotonic() - killed < 10  # not the 50 s the answer had left
    finally:
        stop(router.proc)
        stop(replica.proc)
