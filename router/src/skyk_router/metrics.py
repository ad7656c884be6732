"""Prometheus metrics of the router, served as text on ``GET /metrics``.

Under gunicorn the workers share one view through prometheus_client's
multiprocess mode: ``skyk_router.gunicorn_conf`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start,
each worker writes its samples there, and whichever worker answers a scrape
sums them all. Without that variable (one process, tests) each app keeps its
own registry.

The request path is hot, so the in-flight gauges are not moved per request
at all: :meth:`RouterMetrics.sync` copies the proxy's plain
:class:`~skyk_router.balancing.InFlight` counts into them on every replica
poll (0.5 s) and before every scrape. Each write of a multiprocess value
takes a lock, a ``getpid()`` and an mmap write, five per request, so the
requests, latencies and times to first byte of one turn of the event loop are
added up in plain Python numbers and written once, at the end of that turn
(:meth:`RouterMetrics.flush`): other workers, which answer scrapes too, see
them as good as at once.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter as Tally
from typing import Any

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from skyk_router.balancing import InFlight

#: Seconds; LLM requests range from milliseconds to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class RouterMetrics:
    """The router's metrics and their exposition."""

    def __init__(self, in_flight: InFlight, multiprocess_dir: str | None = None) -> None:
        self._in_flight_counts = in_flight
        self._multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "skyk_router_requests_total", "Proxied requests, by the status class the client got",
            ["status_class"], registry=self.registry)
        self.errors = Counter(
            "skyk_router_errors_total",
            "Failures: 'connect' (replica failed before its first byte; retried), "
            "'stream' (replica failed mid-response), 'no_replica' (answered 503)",
            ["kind"], registry=self.registry)
        self.latency = Histogram(
            "skyk_router_request_duration_seconds",
            "Time from request arrival to the end of the relayed response",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.time_to_first_byte = Histogram(
            "skyk_router_time_to_first_byte_seconds",
            "Time from request arrival to the first body byte relayed (first token when streaming)",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        # livesum: a dead worker's requests are no longer in flight.
        self.in_flight = Gauge(
            "skyk_router_in_flight_requests", "Requests being served, per replica",
            ["replica"], multiprocess_mode="livesum", registry=self.registry)

        # Children by label value, made on first use (a label shows once it is used).
        self._requests_by_class: dict[int, Any] = {}
        self._errors_by_kind: dict[str, Any] = {}
        self._in_flight_by_replica: dict[str, Any] = {}
        # Not yet written (see the module's docstring).
        self._pending_requests: Tally[int] = Tally()
        self._pending_latency = PendingHistogram(self.latency)
        self._pending_first_byte = PendingHistogram(self.time_to_first_byte)
        self._flush_scheduled = False

    def observe(self, status: int, duration_s: float) -> None:
        """Count one finished request."""
        self._pending_requests[status // 100] += 1
        self._pending_latency.observe(duration_s)
        if not self._flush_scheduled:
            self._schedule_flush()

    def first_byte(self, seconds: float) -> None:
        """Observe one request's time to its first body byte."""
        self._pending_first_byte.observe(seconds)
        if not self._flush_scheduled:
            self._schedule_flush()

    def flush(self) -> None:
        """Write what was observed since the last flush where scrapes read it."""
        self._flush_scheduled = False
        for status_class, count in self._pending_requests.items():
            child = self._requests_by_class.get(status_class)
            if child is None:
                child = self._requests_by_class[status_class] = \
                    self.requests.labels(f"{status_class}xx")
            child.inc(count)
        self._pending_requests.clear()
        self._pending_latency.write()
        self._pending_first_byte.write()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a direct call): write now
            self.flush()
            return
        self._flush_scheduled = True
        # call_soon: after the callbacks of this turn of the loop, which may observe more.
        loop.call_soon(self.flush)

    def error(self, kind: str) -> None:
        """Count one failure of ``kind`` (see the help text of ``errors``)."""
        child = self._errors_by_kind.get(kind)
        if child is None:
            child = self._errors_by_kind[kind] = self.errors.labels(kind)
        child.inc()

    def sync(self) -> None:
        """Copy this worker's in-flight counts into the per-replica gauges."""
        for url, count in self._in_flight_counts.snapshot().items():
            child = self._in_flight_by_replica.get(url)
            if child is None:
                child = self._in_flight_by_replica[url] = self.in_flight.labels(url)
            child.set(count)

    def render(self) -> bytes:
        """The text exposition, summed over workers in multiprocess mode."""
        self.flush()
        self.sync()
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)


class PendingHistogram:
    """Observations of a histogram not yet written: a count per bucket, and their sum.

    :meth:`write` adds them to the histogram's own values (its ``_buckets``
    and ``_sum``, which ``Histogram.observe`` writes one observation at a time;
    prometheus_client's version range is pinned in the router's pyproject.toml).
    """

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._bounds: list[float] = list(histogram._upper_bounds)  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._pending = False

    def observe(self, amount: float) -> None:
        """Count one observation."""
        # The first bucket whose upper bound is >= amount, as Histogram.observe picks.
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount
        self._pending = True

    def write(self) -> None:
        """Add the pending observations to the histogram."""
        if not self._pending:
            return
        self._pending = False
        histogram = self._histogram
        histogram._sum.inc(self._sum)
        self._sum = 0.0
        counts = self._counts
        for index, count in enumerate(counts):
            if count:
                histogram._buckets[index].inc(count)
                counts[index] = 0


class MetricsResource:
    """``GET /metrics``."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self._metrics = metrics

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Reply with the Prometheus text format."""
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.render()
