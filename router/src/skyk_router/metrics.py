"""Prometheus metrics of the router, served as text on ``GET /metrics``.

Under gunicorn the workers share one view through prometheus_client's
multiprocess mode: ``skyk_router.gunicorn_conf`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start,
each worker writes its samples there, and whichever worker answers a scrape
sums them all. Without that variable (one process, tests) each app keeps its
own registry.
"""

from __future__ import annotations

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

#: Seconds; LLM requests range from milliseconds to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class RouterMetrics:
    """The router's metrics and their exposition."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
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

    def observe(self, status: int, duration_s: float) -> None:
        """Count one finished request."""
        self.requests.labels(f"{status // 100}xx").inc()
        self.latency.observe(duration_s)

    def render(self) -> bytes:
        """The text exposition, summed over workers in multiprocess mode."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)
        return generate_latest(registry)


class MetricsResource:
    """``GET /metrics``."""

    def __init__(self, metrics: RouterMetrics) -> None:
        self._metrics = metrics

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """Reply with the Prometheus text format."""
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.render()
