"""End-to-end tests: a real gunicorn router (two uvicorn workers) before fake replicas."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import socket
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from router_servers import dead_url, replica_of, wait_until
from skyk_router.balancing import EJECT_S

pytestmark = pytest.mark.slow


def test_proxies_get_and_post_to_both_replicas(router, replicas):
    router.set_replicas([replicas["a"].url, replicas["b"].url])
    seen = set()
    for i in range(12):
        got = requests.get(f"{router.url}/echo?q=1&r=a%2Fb", timeout=5,
                           headers={"X-Custom": str(i), "Keep-Alive": "timeout=5"})
        echoed = got.json()
        assert echoed["method"] == "GET"
        assert echoed["path"] == "/echo"
        assert echoed["query"] == "q=1&r=a%2Fb"  # passed on byte for byte
        assert echoed["headers"]["x-custom"] == str(i)
        assert "keep-alive" not in echoed["headers"]  # hop-by-hop: not forwarded
        assert echoed["headers"]["x-forwarded-for"] == "127.0.0.1"
        seen.add(replica_of(got))
        posted = requests.post(f"{router.url}/echo", data=b"body \x00\xff " * 1000, timeout=5)
        assert posted.json()["method"] == "POST"
        assert posted.json()["body"].startswith("body \x00\ufffd ")
        assert len(posted.json()["body"]) == 8000
        seen.add(replica_of(posted))
    assert seen == {"a", "b"}


def test_a_response_has_one_date_and_one_server_header(router, replicas):
    router.set_replicas([replicas["a"].url])
    with socket.create_connection(("127.0.0.1", int(router.url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    names = [line.split(b":", 1)[0].lower() for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]]
    # The replica (aiohttp) sends both too: the router's own replace them, as nginx does.
    assert names.count(b"date") == 1 and names.count(b"server") == 1


def test_unknown_router_path_is_not_proxied(router, replicas):
    router.set_replicas([replicas["a"].url])
    assert requests.get(f"{router.url}/-/nothing", timeout=5).status_code == 404


def test_sse_events_arrive_as_sent(router, replicas):
    router.set_replicas([replicas["a"].url])
    started = time.monotonic()
    arrivals = []
    with requests.get(f"{router.url}/sse?events=5&interval=0.4", stream=True, timeout=10) as got:
        assert got.headers["Content-Type"].startswith("text/event-stream")
        for line in got.iter_lines(chunk_size=None):
            if line:
                arrivals.append((time.monotonic() - started, line))
    assert [line for _, line in arrivals] == [f"data: {i}".encode() for i in range(5)]
    # The replica takes 2 s in all; buffered, every event would arrive at the end.
    assert arrivals[0][0] < 1.0
    assert arrivals[-1][0] - arrivals[0][0] > 1.2


def test_retries_on_another_replica_before_the_first_byte(router, replicas):
    router.set_replicas([dead_url(), replicas["a"].url, dead_url(), replicas["b"].url])
    for _ in range(20):
        assert replica_of(requests.post(f"{router.url}/echo", json={}, timeout=5)) in ("a", "b")


def test_retries_after_a_replica_dies(router, tmp_path):
    from router_servers import start_fake_replica, stop

    doomed, survivor = start_fake_replica("doomed"), start_fake_replica("survivor")
    try:
        router.set_replicas([doomed.url, survivor.url])
        stop(doomed.proc)
        for _ in range(10):
            assert replica_of(requests.get(f"{router.url}/echo", timeout=5)) == "survivor"
    finally:
        stop(doomed.proc)
        stop(survivor.proc)


def test_no_retry_after_the_first_byte(router, replicas):
    router.set_replicas([replicas["a"].url, replicas["b"].url])
    received = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        with requests.get(f"{router.url}/truncate", stream=True, timeout=10) as got:
            assert got.status_code == 200
            for chunk in got.iter_content(chunk_size=None):
                received += chunk
    # Retried, the client would see a second "first" event from the other replica.
    assert received == b"data: first\n\n"


@pytest.mark.parametrize("headers_sent", [True, False])
def test_client_disconnect_closes_the_upstream_within_1s(router, replicas, headers_sent):
    router.set_replicas([replicas["a"].url])
    hold_id = f"hold-{headers_sent}-{time.time()}"
    client = socket.create_connection(("127.0.0.1", int(router.url.rsplit(":", 1)[1])))
    try:
        client.sendall(f"GET /hold?id={hold_id}&headers={int(headers_sent)} HTTP/1.1\r\n"
                       "Host: router\r\n\r\n".encode())
        if headers_sent:
            client.settimeout(5)
            received = b""
            while b"holding" not in received:
                received += client.recv(4096)
        else:
            time.sleep(0.5)  # the request has reached the replica
    finally:
        client.close()
    closed_at = time.time()
    closed = wait_until(lambda: replicas["a"].closed().get(hold_id), timeout_s=5,
                        message="replica sees its connection closed")
    assert closed - closed_at < 1.0


def test_503_with_hint_when_no_replica(router):
    router.set_replicas([])
    got = requests.post(f"{router.url}/v1/completions", json={"prompt": "hi"}, timeout=5)
    assert got.status_code == 503
    assert got.json()["error"]["message"] == "no ready replica"
    assert "no replica is ready yet" in got.json()["error"]["hint"]


def test_503_when_every_replica_fails(router):
    dead = [dead_url(), dead_url()]
    router.set_replicas(dead)
    for _ in range(3):  # ejected after the first failures, yet still tried
        got = requests.get(f"{router.url}/echo", timeout=10)
        assert got.status_code == 503
        assert got.json()["error"]["message"] == "no ready replica"
        assert "failed before answering (tried 2)" in got.json()["error"]["hint"]


def test_replica_change_applies_within_2s(router, replicas):
    router.set_replicas([replicas["a"].url])
    from router_servers import write_replicas_file

    written = time.monotonic()
    write_replicas_file(router.replicas_file, [replicas["b"].url])
    streak = 0
    while streak < 20:  # new connections each time, so both workers answer
        streak = streak + 1 if replica_of(requests.get(f"{router.url}/echo", timeout=5)) == "b" \
            else 0
        assert time.monotonic() - written < 2.0, "the router still routes to the old replica"


def test_least_load_counts_return_to_zero(router, replicas):
    router.set_replicas([replicas["a"].url, replicas["b"].url], policy="least_load")

    def one(path: str) -> None:
        try:
            if path.startswith("/hold"):  # a client that gives up mid-stream
                with requests.get(f"{router.url}{path}", stream=True, timeout=5) as got:
                    next(got.iter_content(chunk_size=None))
            else:
                requests.get(f"{router.url}{path}", timeout=10)
        except requests.RequestException:
            pass

    paths = ["/slow?delay=0.3", "/truncate", "/reset", "/echo"] * 5 + \
        [f"/hold?id=ll{i}" for i in range(5)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, paths))

    def all_zero() -> bool:
        in_flight = router.stats()["in_flight"]
        return set(in_flight) >= {replicas["a"].url, replicas["b"].url} and \
            not any(in_flight.values())

    wait_until(all_zero, timeout_s=5, message="in-flight counts back to 0")


def test_consistent_hash_keeps_a_session_on_one_replica(router, replicas):
    # A replica ejected after an earlier test's /reset is left off a worker's ring
    # (its keys move) for EJECT_S: let any such ejection expire first.
    time.sleep(EJECT_S)
    router.set_replicas([replicas["a"].url, replicas["b"].url], policy="consistent_hash")
    for session in ("alice", "bob", "carol"):
        # A fresh connection per request, so both workers take part.
        answered = {replica_of(requests.get(f"{router.url}/echo", timeout=5,
                                            headers={"X-Session-ID": session}))
                    for _ in range(15)}
        assert len(answered) == 1
    by_user = {replica_of(requests.post(f"{router.url}/echo", timeout=5,
                                        json={"user": "dave", "prompt": f"q{i}"}))
               for i in range(10)}
    assert len(by_user) == 1
    spread = {replica_of(requests.get(f"{router.url}/echo", timeout=5,
                                      headers={"X-Session-ID": f"user-{i}"}))
              for i in range(40)}
    assert spread == {"a", "b"}


def test_api_keys(router, replicas):
    router.set_replicas([replicas["a"].url],
                        api_keys_sha256=[hashlib.sha256(b"sesame").hexdigest()])
    url = f"{router.url}/echo"
    assert requests.get(url, timeout=5).status_code == 401
    wrong = requests.get(url, timeout=5, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in wrong.json()["error"]["message"]
    assert requests.get(url, timeout=5,
                        headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert requests.get(f"{router.url}/-/health", timeout=5).status_code == 200


def test_metrics_parse_and_cover_the_router(router, replicas):
    router.set_replicas([replicas["a"].url])
    for _ in range(4):
        requests.get(f"{router.url}/echo", timeout=5)
    router.set_replicas([])
    requests.get(f"{router.url}/echo", timeout=5)
    text = requests.get(f"{router.url}/metrics", timeout=5).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert {"skyk_router_requests", "skyk_router_errors", "skyk_router_request_duration_seconds",
            "skyk_router_time_to_first_byte_seconds",
            "skyk_router_in_flight_requests"} <= set(families)
    by_class = {s.labels["status_class"]: s.value for s in families["skyk_router_requests"].samples
                if s.name == "skyk_router_requests_total"}
    # Summed over both workers, whichever answered the scrape.
    assert by_class["2xx"] >= 4
    assert by_class["5xx"] >= 1
    in_flight = {s.labels["replica"]: s.value
                 for s in families["skyk_router_in_flight_requests"].samples}
    assert in_flight[replicas["a"].url] == 0


def assert_openai_error(got: requests.Response, status: int, code: str) -> dict:
    """``got`` is an error of ``status`` in OpenAI's shape; return its error object."""
    assert got.status_code == status, got.text
    assert got.headers["Content-Type"].startswith("application/json")
    error = got.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert error["code"] == code
    return error


def test_every_router_error_is_in_openai_shape(router, replicas):
    port = int(router.url.rsplit(":", 1)[1])
    router.set_replicas([])
    no_replica = assert_openai_error(requests.post(f"{router.url}/v1/chat/completions",
                                                   json={}, timeout=5), 503, "no_ready_replica")
    dead = [dead_url(), dead_url()]
    router.set_replicas(dead)
    all_failed = assert_openai_error(requests.get(f"{router.url}/echo", timeout=10),
                                     503, "no_ready_replica")
    for hint in (no_replica["hint"], all_failed["hint"]):
        # The replicas' and the controller's addresses are internal: not for clients.
        assert "127.0.0.1" not in hint and "http" not in hint and str(port) not in hint, hint
        assert not any(url.rsplit(":", 1)[1] in hint for url in dead), hint
    router.set_replicas([replicas["a"].url], api_keys_sha256=[hashlib.sha256(b"k").hexdigest()])
    assert_openai_error(requests.get(f"{router.url}/echo", timeout=5), 401, "invalid_api_key")
    router.set_replicas([replicas["a"].url])
    assert_openai_error(requests.get(f"{router.url}/-/nothing", timeout=5), 404, "not_found")
    assert_openai_error(requests.post(f"{router.url}/-/health", timeout=5), 405,
                        "method_not_allowed")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "bad_request"


def listening_unix_sockets(pid: int) -> list[str]:
    """The paths of the Unix sockets process ``pid`` has open (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    with open("/proc/net/unix") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return [row[7] for row in rows if len(row) >= 8 and row[6] in inodes]


def test_each_router_has_its_own_control_socket(tmp_path):
    from router_servers import start_router, stop

    homes = [tmp_path / "one", tmp_path / "two"]
    routers = []
    try:
        for home in homes:
            home.mkdir()
            routers.append(start_router(home))
        paths = [wait_until(lambda r=r: [p for p in listening_unix_sockets(r.proc.pid)
                                          if p.endswith("gunicorn.ctl")],
                            message="control socket open")[0] for r in routers]
    finally:
        for running in routers:
            stop(running.proc)
    assert paths[0] != paths[1]
    for path in paths:
        # In the router's own run directory, made private by mkdtemp.
        assert os.path.basename(os.path.dirname(path)).startswith("skyk-router-"), path
    # Not the $HOME/.gunicorn/gunicorn.ctl that every router of the user would share.
    assert not any((home / ".gunicorn").exists() for home in homes)


def test_consistent_hash_relays_any_body(router, replicas):
    """Bodies the affinity key cannot use still reach a replica, held or not."""
    bodies = [b'{"messages": 5}', b'{"prompt": "\\ud800 lone surrogate"}',
              b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"]
    router.set_replicas([replicas["a"].url], policy="consistent_hash")
    for body in bodies:
        got = requests.post(f"{router.url}/echo", data=body, timeout=10,
                            headers={"Content-Type": "application/json"})
        assert replica_of(got) == "a"
    # Held for a replica first (scaled to zero), the same requests are answered too.
    router.set_replicas([], policy="consistent_hash", hold_s=60)
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        held = [pool.submit(requests.post, f"{router.url}/echo", data=body, timeout=30)
                for body in bodies]
        wait_until(lambda: router.stats()["waiting"] == len(bodies), message="requests held")
        router.set_replicas([replicas["a"].url], policy="consistent_hash")
        assert all(replica_of(future.result()) == "a" for future in held)
