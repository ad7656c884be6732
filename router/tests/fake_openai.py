"""A tiny OpenAI-compatible server for tests: ``python fake_openai.py --port N``.

It answers ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``
(streamed or not) with a canned reply that names the server, so a test can
tell which replica answered. Other test servers add these routes with
:func:`add_openai_routes`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

MODEL = "fake-model"
#: The reply's words; a streamed reply sends one word per event.
WORDS = ("Hello", " from", " the", " fake", " replica", ".")


def _usage() -> dict:
    return {"prompt_tokens": 3, "completion_tokens": len(WORDS), "total_tokens": 3 + len(WORDS)}


def add_openai_routes(app: web.Application, name: str, event_interval_s: float = 0.0) -> None:
    """Add the OpenAI endpoints to ``app``; replies mention ``name``."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": MODEL, "object": "model", "created": 0, "owned_by": name}]})

    async def stream(request: web.Request, kind: str, make_choice) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        for index, word in enumerate(WORDS):
            last = index == len(WORDS) - 1
            chunk = {"id": f"{kind}-{name}", "object": f"{kind}.chunk" if kind == "chat.completion"
                     else kind, "created": int(time.time()), "model": MODEL,
                     "system_fingerprint": name, "choices": [make_choice(word, last)]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(event_interval_s)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream"):
            return await stream(request, "chat.completion", lambda word, last: {
                "index": 0, "delta": {"role": "assistant", "content": word},
                "finish_reason": "stop" if last else None})
        return web.json_response({
            "id": f"chatcmpl-{name}", "object": "chat.completion", "created": int(time.time()),
            "model": MODEL, "system_fingerprint": name, "usage": _usage(),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "".join(WORDS)}}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("stream"):
            return await stream(request, "text_completion", lambda word, last: {
                "index": 0, "text": word, "finish_reason": "stop" if last else None})
        return web.json_response({
            "id": f"cmpl-{name}", "object": "text_completion", "created": int(time.time()),
            "model": MODEL, "system_fingerprint": name, "usage": _usage(),
            "choices": [{"index": 0, "text": "".join(WORDS), "finish_reason": "stop"}]})

    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)


def main() -> None:
    """Serve the fake API on loopback until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="fake-openai")
    parser.add_argument("--event-interval", type=float, default=0.0,
                        help="seconds between streamed events")
    args = parser.parse_args()
    app = web.Application()
    add_openai_routes(app, args.name, args.event_interval)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
