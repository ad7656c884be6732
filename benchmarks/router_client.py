"""Streaming clients for the router benchmark: time to first byte, and streams held open.

Usage:
  python benchmarks/router_client.py ttfb URL --connections C --duration S [--stagger S]
  python benchmarks/router_client.py hold URL --connections N --timeout S

``ttfb``: C clients, each opening one stream after another for S seconds
(their first requests spread over ``--stagger`` seconds). For each stream it records the time from sending the request to the first body
byte (time to first byte: the first token of a streamed completion) and to
the end of the stream. Prints one JSON object at the end.

``hold``: N streams opened at once, each of which the server keeps open for a
while (``/hold``). Prints ``{"event": "all_open", ...}`` as soon as every stream
has its first byte, so the caller can look at the router while they are all
held, then a JSON summary when they have all ended: how many were open at the
same moment, how many completed, how many failed.

wrk cannot do this: its Lua hooks see a response only once it is complete.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
import time

import aiohttp


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0-100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def connector() -> aiohttp.TCPConnector:
    """An unlimited pool: every client keeps its own connection alive."""
    return aiohttp.TCPConnector(limit=0)


async def ttfb(url: str, connections: int, duration_s: float, stagger_s: float) -> dict:
    """Open streams from ``connections`` clients for ``duration_s``; time each stream.

    Client ``i`` starts ``i / connections * stagger_s`` late. With ``stagger_s``
    about one stream's length, requests arrive at a steady rate, as users' do,
    rather than in waves of ``connections`` at once.
    """
    first_byte: list[float] = []
    complete: list[float] = []
    errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector(), timeout=timeout,
                                     auto_decompress=False) as session:
        deadline = time.perf_counter() + duration_s

        async def client(index: int) -> None:
            await asyncio.sleep(index / connections * stagger_s)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        if response.status != 200:
                            errors.append(f"status {response.status}")
                            await response.read()
                            continue
                        chunk = await response.content.readany()
                        got_first = time.perf_counter()
                        while chunk:
                            chunk = await response.content.readany()
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    errors.append(repr(error))
                    continue
                ended = time.perf_counter()
                first_byte.append(got_first - started)
                complete.append(ended - started)

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(connections)))
        elapsed = time.perf_counter() - began
    return {"streams": len(first_byte), "elapsed_s": elapsed,
            "streams_per_s": len(first_byte) / elapsed,
            "errors": len(errors), "first_errors": sorted(set(errors))[:3],
            "ttfb_s": {"p50": percentile(first_byte, 50), "p99": percentile(first_byte, 99)},
            "complete_s": {"p50": percentile(complete, 50), "p99": percentile(complete, 99)}}


async def hold(url: str, connections: int, timeout_s: float) -> dict:
    """Open ``connections`` streams at once and read each to its end."""
    opened: list[float] = []
    ended: list[float] = []
    errors: list[str] = []
    all_open = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector(), timeout=timeout,
                                     auto_decompress=False) as session:
        began = time.perf_counter()

        async def stream() -> None:
            try:
                async with session.get(url) as response:
                    if response.status != 200:
                        errors.append(f"status {response.status}")
                        return
                    chunk = await response.content.readany()
                    opened.append(time.perf_counter() - began)
                    if len(opened) == connections:
                        all_open.set()
                    while chunk:
                        chunk = await response.content.readany()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                errors.append(repr(error))
                return
            ended.append(time.perf_counter() - began)

        async def announce() -> None:
            await all_open.wait()
            # Still open at the moment the last one opened: all held at once.
            print(json.dumps({"event": "all_open", "after_s": opened[-1],
                              "open_now": connections - len(ended)}), flush=True)

        announcer = asyncio.ensure_future(announce())
        await asyncio.gather(*(stream() for _ in range(connections)))
        announcer.cancel()
    # Streams open at the same time: the most first-bytes not yet matched by an end.
    events = sorted([(t, 1) for t in opened] + [(t, -1) for t in ended])
    concurrent = peak = 0
    for _, step in events:
        concurrent += step
        peak = max(peak, concurrent)
    return {"event": "done", "connections": connections, "opened": len(opened),
            "completed": len(ended), "errors": len(errors),
            "first_errors": sorted(set(errors))[:3], "max_concurrent": peak,
            "all_open_after_s": opened[-1] if len(opened) == connections else None,
            "stream_s": {"p50": percentile(ended, 50), "max": max(ended, default=None)}}


def main() -> None:
    """Run one client mode and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ttfb", "hold"])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=float, default=5.0, help="ttfb: seconds of load")
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="ttfb: spread the clients' first requests over this many seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="hold: seconds per stream")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.connections + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    if args.mode == "ttfb":
        report = run(ttfb(args.url, args.connections, args.duration, args.stagger))
    else:
        report = run(hold(args.url, args.connections, args.timeout))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
