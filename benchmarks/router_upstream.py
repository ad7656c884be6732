"""An LLM-like replica for the router benchmark, on loopback only.

Usage: python benchmarks/router_upstream.py --port N [--shared-port M]

Routes (GET, any query parameter optional):

- ``/llm?delay=S``: a small JSON completion after S seconds (default 0.02), like
  a non-streamed request to a model server;
- ``/stream?chunks=N&interval=S``: N server-sent events (default 50), the first
  at once and the rest S seconds apart (default 0.01), like a streamed
  completion (the first event is the first token);
- ``/hold?seconds=T&interval=S``: one event every S seconds (default 1) for T
  seconds (default 12): a slow stream that stays open;
- ``/fast``: a tiny fixed answer at once (used when nginx is not installed).

``--port`` is this process's own port (the router is given one URL per
process). ``--shared-port`` is bound with SO_REUSEPORT by every replica
process, so the kernel spreads a client's connections over all of them:
that is the "direct" baseline, the same processes without the router.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web

#: About the size of a short chat completion.
COMPLETION = (b'{"id":"cmpl-bench","object":"chat.completion","model":"bench",'
              b'"choices":[{"index":0,"message":{"role":"assistant","content":'
              b'"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}]}')
CHUNK = b'data: {"choices":[{"delta":{"content":"token"}}]}\n\n'
#: Longer than the default 128: the router opens up to ~1000 connections at once.
BACKLOG = 4096


async def llm(request: web.Request) -> web.Response:
    """Answer after a model's worth of delay."""
    await asyncio.sleep(float(request.query.get("delay", "0.02")))
    return web.Response(body=COMPLETION, content_type="application/json")


async def stream(request: web.Request) -> web.StreamResponse:
    """Stream events like tokens: the first at once, then one every interval."""
    chunks = int(request.query.get("chunks", "50"))
    interval = float(request.query.get("interval", "0.01"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    for index in range(chunks):
        if index:
            await asyncio.sleep(interval)
        await response.write(CHUNK)
    await response.write_eof()
    return response


async def hold(request: web.Request) -> web.StreamResponse:
    """A slow stream: one event every interval, for the given number of seconds."""
    seconds = float(request.query.get("seconds", "12"))
    interval = float(request.query.get("interval", "1"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    await response.write(CHUNK)
    while loop.time() + interval <= end:
        await asyncio.sleep(interval)
        await response.write(CHUNK)
    await response.write_eof()
    return response


async def fast(request: web.Request) -> web.Response:
    """A tiny fixed answer."""
    return web.Response(body=b"ok\n", content_type="text/plain")


def build_app() -> web.Application:
    """The replica's aiohttp application."""
    app = web.Application()
    app.router.add_get("/llm", llm)
    app.router.add_get("/stream", stream)
    app.router.add_get("/hold", hold)
    app.router.add_get("/fast", fast)
    return app


async def serve(port: int, shared_port: int | None) -> None:
    """Serve on 127.0.0.1 until cancelled."""
    # No signal handlers: SIGTERM's default action (exit at once) is what the benchmark wants.
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG).start()
    if shared_port:
        await web.TCPSite(runner, "127.0.0.1", shared_port, backlog=BACKLOG,
                          reuse_port=True).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse the ports and serve, with uvloop when it is installed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="this process's own port")
    parser.add_argument("--shared-port", type=int, help="port shared by all replicas (SO_REUSEPORT)")
    args = parser.parse_args()
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.port, args.shared_port))


if __name__ == "__main__":
    main()
