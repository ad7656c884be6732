"""Reading a service's load: the router's request rate and the replicas' engine queues.

Standard library only, and never raising on a network problem or a bad
answer: the controller calls these every tick, and a replica that does not
answer (still loading, overloaded, gone) must cost it one missing number,
not the tick. Each returns None when it could not read.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import ssl
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

#: Engine gauges of requests waiting for a slot: vLLM's and SGLang's.
QUEUE_METRICS: tuple[str, ...] = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")

#: Far more than any engine's ``/metrics`` page; a bigger body is cut here.
MAX_BODY = 8 * 1024 * 1024

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

# Replicas and the router are reached directly: an HTTP(S)_PROXY meant for
# the user's outbound traffic must not swallow these calls. With service.tls
# the router on loopback answers HTTPS with a certificate for the service's
# public name, not 127.0.0.1, so it is not verified here: the controller
# started that router itself and the call never leaves the machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                      urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))


def _get(url: str, timeout: float) -> bytes | None:
    """GET ``url``; the body of a 2xx answer, or None on any network or HTTP error."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            body = response.read(MAX_BODY + 1)
    except (OSError, ValueError, http.client.HTTPException):
        # OSError covers refused, unreachable, timeouts and non-2xx answers
        # (HTTPError); ValueError a malformed URL.
        return None
    if len(body) > MAX_BODY:
        # Cut mid-line, the last number could read as a different one: drop it.
        body = body[:MAX_BODY].rpartition(b"\n")[0]
    return body


def sum_metric(text: str, names: Iterable[str] = QUEUE_METRICS) -> float | None:
    """Sum the samples of metrics ``names`` in a Prometheus text exposition.

    Every sample of those names counts, whatever its labels (one per model
    or engine). Comments, other metrics, lines that do not parse and samples
    that are NaN or infinite (no value) are skipped.

    :return: the sum, or None when no finite sample of those names is present.
    """
    wanted = frozenset(names)
    total, found = 0.0, False
    for line in text.splitlines():
        sample = _parse_sample(line)
        if sample is not None and sample[0] in wanted and math.isfinite(sample[1]):
            total += sample[1]
            found = True
    return total if found else None


def _parse_sample(line: str) -> tuple[str, float] | None:
    """Return (metric name, value) of one exposition line, or None for anything else."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    match = _METRIC_NAME.match(line)
    if match is None:
        return None
    rest = line[match.end():].lstrip()
    if rest.startswith("{"):
        end = _labels_end(rest)
        if end is None:
            return None
        rest = rest[end:]
    # The value, then an optional timestamp (and, in OpenMetrics, an
    # optional exemplar), which the sum does not need.
    fields = rest.split()
    if not fields:
        return None
    try:
        return match.group(), float(fields[0])  # float() reads NaN, +Inf, -Inf
    except ValueError:
        return None


def _labels_end(text: str) -> int | None:
    """Index just past the ``}`` that closes the label set ``text`` opens, or None.

    Label values are quoted and may hold spaces, commas, braces and
    backslash-escaped quotes, so the set ends at the first ``}`` outside quotes.
    """
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            return index + 1
    return None


def queue_length(base_url: str, timeout: float = 2.0,
                 names: Iterable[str] = QUEUE_METRICS) -> float | None:
    """Return the requests waiting in a replica's engine, from its ``/metrics``.

    :param base_url: the replica, e.g. ``http://10.0.0.5:8080``.
    :param timeout: seconds per connection step; kept short because the
        controller reads every ready replica each tick.
    :param names: the gauges to sum (:data:`QUEUE_METRICS` by default).
    :return: the sum of every sample of ``names``; None when the replica does
        not answer, answers an error, or reports none of them.
    """
    body = _get(f"{base_url.rstrip('/')}/metrics", timeout)
    if body is None:
        return None
    return sum_metric(body.decode("utf-8", errors="replace"), names)


def router_answers(router_base_url: str, timeout: float = 2.0) -> bool:
    """Whether the router answers its ``GET /-/health`` (it is listening and its app loaded)."""
    return _get(f"{router_base_url.rstrip('/')}/-/health", timeout) is not None


def router_stats(router_base_url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """Return the router's ``GET /-/stats`` report as it is, or None.

    :param router_base_url: the router, e.g. ``http://127.0.0.1:30001``.
    :param timeout: seconds per connection step.
    :return: the JSON object; None when the router does not answer, answers
        an error, or the body is not a JSON object.
    """
    body = _get(f"{router_base_url.rstrip('/')}/-/stats", timeout)
    if body is None:
        return None
    try:
        stats = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (or absurdly nested)
        return None
    return stats if isinstance(stats, dict) else None


def router_load(router_base_url: str, window_s: float, now: float | None = None,
                timeout: float = 2.0) -> tuple[float, int] | None:
    """Return the router's (requests per second, requests held waiting) from ``/-/stats``.

    The router reports ``requests_by_second`` as ``[[unix_second, count],
    ...]`` summed over its workers, and ``waiting``, the requests it holds
    because no replica is ready.

    :param router_base_url: the router, e.g. ``http://127.0.0.1:30001``.
    :param window_s: the rate window in seconds (> 0): buckets of the last
        ``window_s`` whole seconds up to ``now`` (second > now - window_s - 1)
        are counted and divided by ``window_s``. The router keeps its last
        60 s of buckets, so a longer window reads too low a rate.
    :param now: the end of the window, in unix seconds; ``time.time()`` by default.
    :param timeout: seconds per connection step.
    :return: None when the router does not answer or its answer lacks those fields.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, not {window_s}")
    stats = router_stats(router_base_url, timeout)
    if stats is None:
        return None
    try:
        buckets, waiting = stats["requests_by_second"], stats["waiting"]
        pairs = [(second, count) for second, count in buckets]
    except (KeyError, TypeError, ValueError):
        return None  # a field missing, or a bucket that is not a pair
    if not _count(waiting) or not all(_number(s) and _count(c) for s, c in pairs):
        return None
    start = (time.time() if now is None else now) - window_s - 1
    # No upper bound: a request the router counted just after ``now`` was
    # read (the clock ticked on during the GET) is still load.
    total = sum(count for second, count in pairs if second > start)
    return total / window_s, waiting


def _number(value: object) -> bool:
    # bool is an int to Python, never a number in this JSON.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
