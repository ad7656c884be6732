"""The router's load report, ``GET /-/stats``, summed over gunicorn workers.

A scrape reaches one worker at random, so each worker publishes its own
numbers to ``{stats_dir}/{pid}.json`` every poll (0.5 s) and the worker that
answers sums every fresh file. The controller thus reads the whole router's
load in one request; the numbers lag by at most one poll.

Besides the totals, ``requests_by_second`` lists the arrivals of each second of
the window, so the autoscaler can take the rate over a window of its own, and
``replicas_version`` is the oldest replica list version any worker routes by.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import falcon

from skyk_router.balancing import InFlight
from skyk_router.replicas import ReplicaView

#: The rate window the controller's autoscaler reads.
WINDOW_S = 60
#: A worker file older than this belongs to a worker that died or hangs.
STALE_AFTER_S = 5.0


class RequestRate:
    """Requests counted in one-second buckets over the last :data:`WINDOW_S` seconds.

    Seconds are wall-clock (Unix) seconds, not monotonic ones, so the buckets
    of different worker processes name the same seconds and add up.
    """

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first

    def record(self, now: float | None = None) -> None:
        """Count one request arriving at ``now`` (Unix seconds; the current time by default)."""
        second = int(time.time() if now is None else now)
        # ">=": should the wall clock step back, count in the newest bucket so
        # the buckets stay in order.
        if self._buckets and self._buckets[-1][0] >= second:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([second, 1])
            self._trim(second)

    def count(self, now: float | None = None) -> int:
        """Requests in the window ending at ``now``."""
        self._trim(int(time.time() if now is None else now))
        return sum(count for _, count in self._buckets)

    def by_second(self, now: float | None = None) -> list[list[int]]:
        """``[second, count]`` of each second with requests in the window, oldest first."""
        self._trim(int(time.time() if now is None else now))
        return [list(bucket) for bucket in self._buckets]

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - WINDOW_S:
            self._buckets.popleft()


class WorkerStats:
    """This worker's load, and the sum over all workers."""

    def __init__(self, in_flight: InFlight, stats_dir: str | None,
                 view: Callable[[], ReplicaView] = ReplicaView) -> None:
        self.rate = RequestRate()
        #: Requests held now, waiting for a replica to start (the proxy counts them).
        self.waiting = 0
        self._in_flight = in_flight
        self._view = view
        self._dir = Path(stats_dir) if stats_dir else None
        self._pid = os.getpid()

    def snapshot(self) -> dict[str, Any]:
        """This worker's numbers, and the replica list it routes to."""
        count = self.rate.count()
        view = self._view()
        return {"pid": self._pid, "requests_last_window": count,
                "requests_per_second": count / WINDOW_S,
                "requests_by_second": self.rate.by_second(),
                "waiting": self.waiting,
                "in_flight": self._in_flight.snapshot(),
                "replicas": list(view.urls),
                "load_balancing_policy": view.load_balancing_policy,
                "api_keys_required": view.api_keys_sha256 is not None,
                "hold_s": view.hold_s,
                "replicas_version": view.version}

    def publish(self) -> None:
        """Write this worker's numbers where the other workers read them."""
        if self._dir is None:
            return
        path = self._dir / f"{self._pid}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.snapshot()))
        # Atomic: a reader sees the old file or the new one, never half of one.
        os.replace(temporary, path)

    def withdraw(self) -> None:
        """Remove this worker's file (on shutdown)."""
        if self._dir is not None:
            (self._dir / f"{self._pid}.json").unlink(missing_ok=True)

    def total(self) -> dict[str, Any]:
        """The whole router's load: every live worker's numbers and their sums."""
        workers = {self._pid: self.snapshot()}
        if self._dir is not None:
            oldest = time.time() - STALE_AFTER_S
            for path in self._dir.glob("*.json"):
                try:
                    if path.stat().st_mtime < oldest:
                        continue
                    report = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # a worker exiting right now
                workers.setdefault(report["pid"], report)
        in_flight: dict[str, int] = {}
        for report in workers.values():
            for url, count in report["in_flight"].items():
                in_flight[url] = in_flight.get(url, 0) + count
        count = sum(report["requests_last_window"] for report in workers.values())
        return {"window_s": WINDOW_S, "requests_last_window": count,
                "replicas_version": oldest_version(workers.values()),
                "requests_per_second": count / WINDOW_S,
                "requests_by_second": sum_by_second(workers.values()),
                "waiting": sum(report["waiting"] for report in workers.values()),
                "in_flight": in_flight,
                "workers": sorted(workers.values(), key=lambda report: report["pid"])}


def oldest_version(reports: Iterable[dict[str, Any]]) -> int | None:
    """The replica list version that every worker routes by (or by a newer one).

    The oldest of the workers' versions; None while any worker has none (it
    has not read a numbered list yet). A controller shows a replica READY only
    once this version includes it, so READY means that every worker routes to it.
    """
    versions = [report.get("replicas_version") for report in reports]
    if not versions or any(not isinstance(version, int) for version in versions):
        return None
    return min(versions)


def sum_by_second(reports: Iterable[dict[str, Any]],
                  now: float | None = None) -> list[list[int]]:
    """Add up the ``requests_by_second`` of ``reports`` second by second, oldest first.

    Seconds that left the window ending at ``now`` are dropped: another
    worker's report may be up to a poll old.
    """
    counts: Counter[int] = Counter()
    for report in reports:
        for second, count in report["requests_by_second"]:
            counts[second] += count
    oldest = int(time.time() if now is None else now) - WINDOW_S
    return [[second, counts[second]] for second in sorted(counts) if second > oldest]


class StatsResource:
    """``GET /-/stats``."""

    def __init__(self, stats: WorkerStats) -> None:
        self._stats = stats

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Reply with the load of all workers as JSON."""
        resp.media = self._stats.total()
