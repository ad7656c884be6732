"""Tests of replica discovery and of the cross-worker stats."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from skyk_router.balancing import InFlight
from skyk_router.replicas import FileSource, ReplicaWatcher, parse_view
from skyk_router.stats import WINDOW_S, RequestRate, WorkerStats, sum_by_second


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


def test_parse_view_hold_s():
    assert parse_view({"replicas": []}).hold_s == 0
    assert parse_view({"replicas": [], "hold_s": 90}).hold_s == 90.0
    assert parse_view({"replicas": [], "hold_s": 0.5}).hold_s == 0.5
    for bad in (-1, "30", True, None, float("inf"), float("nan"), [30]):
        with pytest.raises(ValueError, match="hold_s"):
            parse_view({"replicas": [], "hold_s": bad})


def write_view(path, urls: list[str], **fields) -> None:
    """Write a replicas document, with a new modification time for FileSource."""
    path.write_text(json.dumps({"replicas": [{"url": url} for url in urls], **fields}))
    os.utime(path, ns=(time.time_ns(), time.time_ns()))


def test_wait_for_replicas_wakes_on_the_refresh_that_lists_one(tmp_path):
    path = tmp_path / "replicas.json"
    write_view(path, [], hold_s=60)
    watcher = ReplicaWatcher(FileSource(str(path)))

    async def scenario() -> tuple[object, float]:
        await watcher.refresh()
        waiter = asyncio.ensure_future(watcher.wait_for_replicas(60))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        write_view(path, ["http://a:1"])
        refreshed = time.monotonic()
        await watcher.refresh()
        view = await waiter
        return view, time.monotonic() - refreshed

    view, latency = asyncio.run(scenario())
    assert view.urls == ("http://a:1",)
    assert latency < 5  # woken by the refresh, not at the end of its 60 s


def test_wait_for_replicas_times_out_and_returns_at_once_when_listed(tmp_path):
    path = tmp_path / "replicas.json"
    write_view(path, [])
    watcher = ReplicaWatcher(FileSource(str(path)))
    asyncio.run(watcher.refresh())
    assert asyncio.run(watcher.wait_for_replicas(0.05)) is None
    assert asyncio.run(watcher.wait_for_replicas(-1)) is None
    write_view(path, ["http://a:1"])
    asyncio.run(watcher.refresh())
    assert asyncio.run(watcher.wait_for_replicas(60)).urls == ("http://a:1",)


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


def test_a_list_nested_too_deep_keeps_the_last_view_and_the_poll_going(tmp_path):
    path = tmp_path / "replicas.json"
    write_view(path, ["http://a:1"])
    watcher = ReplicaWatcher(FileSource(str(path)))
    asyncio.run(watcher.refresh())
    path.write_text('{"replicas": ' + "[" * 100_000 + "]" * 100_000 + "}")
    asyncio.run(watcher.refresh())  # would raise RecursionError, ending the worker's poll
    assert watcher.view.urls == ("http://a:1",)
    write_view(path, ["http://b:1"])
    asyncio.run(watcher.refresh())
    assert watcher.view.urls == ("http://b:1",)


def test_request_rate_window():
    rate = RequestRate()
    for second in (0, 0, 1, 30):
        rate.record(now=second + 0.5)
    assert rate.count(now=30.9) == 4
    assert rate.count(now=WINDOW_S + 0.5) == 2  # the two at second 0 fell out
    assert rate.count(now=200) == 0


def test_request_rate_by_second():
    rate = RequestRate()
    base = 1_700_000_000
    for moment in (0.1, 0.9, 2.5, 2.6, 1.0):  # the last: a wall clock that stepped back
        rate.record(now=base + moment)
    assert rate.by_second(now=base + 3) == [[base, 2], [base + 2, 3]]
    assert rate.by_second(now=base + WINDOW_S + 1) == [[base + 2, 3]]
    rate.record()  # now, by default
    assert rate.by_second()[-1][0] in (int(time.time()) - 1, int(time.time()))


def test_sum_by_second_adds_equal_seconds_and_drops_old_ones():
    now = 1_700_000_100
    reports = [{"requests_by_second": [[now - WINDOW_S, 7], [now - 2, 1], [now, 2]]},
               {"requests_by_second": [[now - 3, 4], [now - 2, 5]]},
               {"requests_by_second": []}]
    assert sum_by_second(reports, now=now) == [[now - 3, 4], [now - 2, 6], [now, 2]]


def test_stats_sum_fresh_worker_files(tmp_path):
    in_flight = InFlight()
    in_flight.acquire("http://a:1")
    stats = WorkerStats(in_flight, str(tmp_path))
    stats.rate.record()
    stats.waiting = 2
    second = int(time.time())
    other = {"pid": 1, "requests_last_window": 5, "requests_per_second": 5 / 60,
             # Seconds well apart from this worker's, whatever second it is now.
             "requests_by_second": [[second - 30, 4], [second - 20, 1]], "waiting": 1,
             "in_flight": {"http://a:1": 2, "http://b:1": 1}}
    (tmp_path / "1.json").write_text(json.dumps(other))
    stale = dict(other, pid=2)
    (tmp_path / "2.json").write_text(json.dumps(stale))
    os.utime(tmp_path / "2.json", (0, 0))  # a worker that died without cleaning up
    total = stats.total()
    assert total["requests_last_window"] == 6
    assert sum(count for _, count in total["requests_by_second"]) == 6
    assert total["requests_by_second"][:2] == [[second - 30, 4], [second - 20, 1]]
    assert total["waiting"] == 3
    assert total["in_flight"] == {"http://a:1": 3, "http://b:1": 1}
    assert [worker["pid"] for worker in total["workers"]] == sorted([1, os.getpid()])
    stats.publish()
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())["in_flight"] == \
        {"http://a:1": 1}
    stats.withdraw()
    assert not (tmp_path / f"{os.getpid()}.json").exists()


def test_parse_view_version():
    assert parse_view({"replicas": []}).version is None
    assert parse_view({"replicas": [], "version": 17}).version == 17
    for bad in (True, -1, 1.5, "3"):
        with pytest.raises(ValueError, match="version"):
            parse_view({"replicas": [], "version": bad})


def test_stats_report_the_oldest_list_version_of_any_worker(tmp_path):
    path = tmp_path / "replicas.json"
    write_view(path, ["http://a:1"], version=9)
    watcher = ReplicaWatcher(FileSource(str(path)))
    asyncio.run(watcher.refresh())
    workers = tmp_path / "stats"
    workers.mkdir()
    stats = WorkerStats(InFlight(), str(workers), lambda: watcher.view)
    assert stats.total()["replicas_version"] == 9
    other = {"pid": 1, "requests_last_window": 0, "requests_by_second": [], "waiting": 0,
             "in_flight": {}}
    # A worker still on an older list: the router as a whole routes by that one.
    (workers / "1.json").write_text(json.dumps(dict(other, replicas_version=8)))
    assert stats.total()["replicas_version"] == 8
    # A worker that has read no numbered list yet: no version is every worker's.
    (workers / "1.json").write_text(json.dumps(dict(other, replicas_version=None)))
    assert stats.total()["replicas_version"] is None
