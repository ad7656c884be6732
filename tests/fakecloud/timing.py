"""How long a fake cloud worked within a stretch of time: what a real cloud would spend there.

Benchmarks subtract it from a command's wall time to get skyk's own share. A
fake works while it answers a request and while one of its long-running
operations (a VM booting its twin, say) is under way; those overlap, so the
busy time is the length of the union of the spans, not their sum.
"""

from __future__ import annotations

from collections.abc import Iterable


def busy_seconds(spans: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of ``[start, end]`` (``time.time()`` values) covered by at least one span."""
    clipped = sorted((max(a, start), min(b, end)) for a, b in spans if b > start and a < end)
    total, reach = 0.0, start
    for a, b in clipped:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total
