"""Complete answers the router writes itself on the raw ASGI path (errors as JSON)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: The ASGI callables: ``receive`` returns the next event, ``send`` takes one.
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_json(send: Send, status: int, document: Any,
                    headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer ``status`` with ``document`` as a JSON body, in one response."""
    body = json.dumps(document).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
