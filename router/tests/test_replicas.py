"""Tests of replica discovery and of the cross-worker stats."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from skyk_router.balancing import InFlight
from skyk_router.replicas import FileSource, ReplicaWatcher, parse_view
from skyk_router.stats import WINDOW_S, RequestRate, WorkerStats


def test_parse_view_sorts_and_validates():
    view = parse_view({"replicas": [{"id": 2, "url": "http://b:1/"}, {"id": 1, "url": "http://a:1"}],
                       "load_balancing_policy": "least_load", "api_keys_sha256": ["ABC"]})
    assert view.urls == ("http://a:1", "http://b:1")
    assert view.load_balancing_policy == "least_load"
    assert view.api_keys_sha256 == frozenset({"abc"})
    assert parse_view({"replicas": []}).api_keys_sha256 is None
    for bad in ([], {"replicas": [{"url": "ftp://x"}]}, {"replicas": [{}]},
                {"replicas": [], "api_keys_sha256": "abc"}):
        with pytest.raises(ValueError):
            parse_view(bad)


def test_file_watcher_rereads_on_change_and_keeps_the_last_good_view(tmp_path):
    path = tmp_path / "replicas.json"
    path.write_text(json.dumps({"replicas": [{"id": 1, "url": "http://a:1"}]}))
    watcher = ReplicaWatcher(FileSource(str(path)))
    asyncio.run(watcher.refresh())
    assert watcher.view.urls == ("http://a:1",)
    path.write_text('{"replicas": [')  # a half-written file
    asyncio.run(watcher.refresh())
    assert watcher.view.urls == ("http://a:1",)
    path.write_text(json.dumps({"replicas": [{"id": 2, "url": "http://b:1"}]}))
    asyncio.run(watcher.refresh())
    assert watcher.view.urls == ("http://b:1",)
    path.unlink()
    asyncio.run(watcher.refresh())
    assert watcher.view.urls == ("http://b:1",)


def test_request_rate_window():
    rate = RequestRate()
    for second in (0, 0, 1, 30):
        rate.record(now=second + 0.5)
    assert rate.count(now=30.9) == 4
    assert rate.count(now=WINDOW_S + 0.5) == 2  # the two at second 0 fell out
    assert rate.count(now=200) == 0


def test_stats_sum_fresh_worker_files(tmp_path):
    in_flight = InFlight()
    in_flight.acquire("http://a:1")
    stats = WorkerStats(in_flight, str(tmp_path))
    stats.rate.record()
    other = {"pid": 1, "requests_last_window": 5, "requests_per_second": 5 / 60,
             "in_flight": {"http://a:1": 2, "http://b:1": 1}}
    (tmp_path / "1.json").write_text(json.dumps(other))
    stale = dict(other, pid=2)
    (tmp_path / "2.json").write_text(json.dumps(stale))
    os.utime(tmp_path / "2.json", (0, 0))  # a worker that died without cleaning up
    total = stats.total()
    assert total["requests_last_window"] == 6
    assert total["in_flight"] == {"http://a:1": 3, "http://b:1": 1}
    assert [worker["pid"] for worker in total["workers"]] == sorted([1, os.getpid()])
    stats.publish()
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())["in_flight"] == \
        {"http://a:1": 1}
    stats.withdraw()
    assert not (tmp_path / f"{os.getpid()}.json").exists()
