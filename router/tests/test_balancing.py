"""Tests of the load-balancing policies, the request key, auth and header filtering."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter

import pytest
from skyk_router.auth import key_matches
from skyk_router.balancing import (
    EJECT_S,
    ConsistentHash,
    Ejections,
    InFlight,
    LeastLoad,
    make_policy,
    request_key,
)
from skyk_router.forwarding import forwarded_headers

REPLICAS = [f"http://10.0.0.{i}:8000" for i in range(1, 5)]


def test_make_policy_by_name():
    for name in ("round_robin", "least_load", "consistent_hash"):
        assert make_policy(name, InFlight()).name == name
    with pytest.raises(KeyError):
        make_policy("random", InFlight())


def test_least_load_picks_the_idlest_and_spreads_ties():
    in_flight = InFlight()
    policy = LeastLoad(in_flight)
    for url in REPLICAS[:3]:
        in_flight.acquire(url)
    assert policy.choose(REPLICAS) == REPLICAS[3]
    in_flight.acquire(REPLICAS[3])
    assert {policy.choose(REPLICAS) for _ in range(8)} == set(REPLICAS)
    for url in REPLICAS:
        in_flight.release(url)
    assert set(in_flight.snapshot().values()) == {0}
    assert policy.choose([]) is None


def test_ejected_replicas_come_last_and_return():
    ejections = Ejections()
    assert ejections.preferred(REPLICAS) == REPLICAS
    ejections.eject(REPLICAS[0], now=100)
    ejections.eject(REPLICAS[2], now=100)
    assert ejections.preferred(REPLICAS, now=101) == [REPLICAS[1], REPLICAS[3]]
    # Never dropped: when only ejected replicas are left, they are tried.
    assert ejections.preferred([REPLICAS[0], REPLICAS[2]], now=101) == [REPLICAS[0], REPLICAS[2]]
    ejections.restore(REPLICAS[2])  # it answered
    assert ejections.preferred(REPLICAS, now=101) == REPLICAS[1:]
    assert ejections.preferred(REPLICAS, now=100 + EJECT_S) == REPLICAS  # expired


def test_consistent_hash_is_stable_and_moves_few_keys():
    policy = ConsistentHash()
    keys = [f"session:{i}" for i in range(2000)]
    before = {key: policy.choose(REPLICAS, key) for key in keys}
    assert before == {key: ConsistentHash().choose(REPLICAS, key) for key in keys}
    shares = Counter(before.values())
    assert min(shares.values()) > 2000 / 4 * 0.6  # roughly even
    after = {key: policy.choose(REPLICAS[:3], key) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert all(before[key] == REPLICAS[3] for key in moved)  # only the leaver's keys


def test_consistent_hash_agrees_across_processes():
    # Each gunicorn worker is a process with its own hash seed: the ring must not care.
    script = ("import json,sys; from skyk_router.balancing import ConsistentHash; "
              f"print(json.dumps([ConsistentHash().choose({REPLICAS!r}, f'k{{i}}') "
              "for i in range(200)]))")
    outputs = {subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                              text=True, env={"PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == [ConsistentHash().choose(REPLICAS, f"k{i}")
                                         for i in range(200)]


def test_consistent_hash_without_key_goes_round():
    policy = ConsistentHash()
    assert {policy.choose(REPLICAS) for _ in range(4)} == set(REPLICAS)


def test_request_key_prefers_session_then_user_then_prompt():
    assert request_key("s1", b'{"user": "u"}') == "session:s1"
    assert request_key(None, b'{"user": "u", "prompt": "p"}') == "session:u"
    long_prompt = "x" * 300
    assert request_key(None, json.dumps({"prompt": long_prompt + "a"}).encode()) == \
        request_key(None, json.dumps({"prompt": long_prompt + "b"}).encode())
    chat = {"messages": [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    assert request_key(None, json.dumps(chat).encode()) == \
        "prompt:" + b"You are terse.Hi".hex()
    assert request_key(None, b'{"prompt": [[1, 2, 3]]}') is not None
    assert request_key(None, b"not json") is None
    assert request_key(None, b"") is None
    assert request_key(None, b'{"model": "m"}') is None


def test_key_matches():
    accepted = frozenset({hashlib.sha256(b"sesame").hexdigest()})
    assert key_matches("Bearer sesame", accepted)
    assert key_matches("bearer sesame", accepted)
    assert not key_matches("Bearer other", accepted)
    assert not key_matches("Basic sesame", accepted)
    assert not key_matches(None, accepted)
    assert not key_matches("Bearer ", accepted)


def test_forwarded_headers_drop_hop_by_hop():
    raw = [(b"host", b"router"), (b"connection", b"keep-alive, x-private"), (b"x-private", b"1"),
           (b"transfer-encoding", b"chunked"), (b"content-length", b"3"), (b"x-keep", b"yes"),
           (b"x-forwarded-for", b"10.1.1.1")]
    assert forwarded_headers(raw, "127.0.0.1") == [
        (b"x-keep", b"yes"), (b"x-forwarded-for", b"10.1.1.1, 127.0.0.1")]
