"""A misbehaving replica for the router's tests: ``python fake_replica.py --port N --name A``.

Besides the OpenAI routes of :mod:`fake_openai` it answers, on any method:

- ``/echo``: JSON naming the replica and the request it got (method, path,
  query, headers, body);
- ``/slow?delay=S``: the echo, after S seconds;
- ``/sse?events=N&interval=S``: N server-sent events, S seconds apart;
- ``/truncate``: headers and one chunk, then a dropped connection;
- ``/reset``: a dropped connection before any byte;
- ``/hold?id=X&headers=0|1``: never finishes (with headers sent or not) and
  records when the router closed the connection, read back from
  ``GET /-/closed`` as ``{"X": seconds_since_epoch}``;
- ``/status?code=N``: an empty answer with status N (204, 304...);
- ``/bytes?n=N``: N bytes, in one answer with a Content-Length (``chunked=1``:
  in 64 KiB chunks without one);
- ``/digest``: the size and sha256 of the request body;
- ``/close``: the echo, then the connection closed (``Connection: close``).

``--keepalive-timeout S`` closes idle connections after S seconds, and
``--ssl-certfile``/``--ssl-keyfile`` serve HTTPS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ssl
import time

from aiohttp import web
from fake_openai import add_openai_routes


def build_app(name: str) -> web.Application:
    """The replica's aiohttp application."""
    closed: dict[str, float] = {}

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "replica": name, "method": request.method, "path": request.path,
            "query": request.rel_url.raw_query_string,
            "headers": {header.lower(): value for header, value in request.headers.items()},
            "body": body.decode("utf-8", "replace")}, headers={"X-Replica": name})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return await echo(request)

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "X-Replica": name})
        await response.prepare(request)
        for index in range(int(request.query.get("events", "5"))):
            await response.write(f"data: {index}\n\n".encode())
            await asyncio.sleep(float(request.query.get("interval", "0.3")))
        await response.write_eof()
        return response

    async def truncate(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await asyncio.sleep(0.2)
        request.transport.abort()
        return response

    async def reset(request: web.Request) -> web.StreamResponse:
        await request.read()
        request.transport.abort()
        return web.Response()

    async def hold(request: web.Request) -> web.StreamResponse:
        if request.query.get("headers", "1") == "1":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: holding\n\n")
        # Handlers are not cancelled when the peer leaves, so watch the transport.
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.02)
        closed[request.query.get("id", "")] = time.time()
        return web.Response()

    async def closed_ids(request: web.Request) -> web.Response:
        return web.json_response(closed)

    async def status(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=int(request.query["code"]), headers={"X-Replica": name})

    async def some_bytes(request: web.Request) -> web.StreamResponse:
        size = int(request.query["n"])
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        if request.query.get("chunked") != "1":
            return web.Response(body=data, headers={"X-Replica": name})
        response = web.StreamResponse(headers={"X-Replica": name})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, size, 65536):
            await response.write(data[start:start + 65536])
        await response.write_eof()
        return response

    async def digest(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                  "headers": {k.lower(): v for k, v in request.headers.items()}},
                                 headers={"X-Replica": name})

    async def close(request: web.Request) -> web.Response:
        response = await echo(request)
        response.force_close()
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)  # /digest takes large bodies
    for path, handler in (("/echo", echo), ("/slow", slow), ("/sse", sse),
                          ("/truncate", truncate), ("/reset", reset), ("/hold", hold),
                          ("/status", status), ("/bytes", some_bytes), ("/digest", digest),
                          ("/close", close)):
        app.router.add_route("*", path, handler)
    app.router.add_get("/-/closed", closed_ids)
    add_openai_routes(app, name, event_interval_s=0.05)
    return app


def main() -> None:
    """Serve on loopback until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--keepalive-timeout", type=float, default=75.0,
                        help="seconds an idle connection stays open (aiohttp's default: 75)")
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", help="and this private key (PEM)")
    args = parser.parse_args()
    context = None
    if args.ssl_certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    web.run_app(build_app(args.name), host="127.0.0.1", port=args.port, print=None,
                keepalive_timeout=args.keepalive_timeout, ssl_context=context)


if __name__ == "__main__":
    main()
