"""The HTTP server protocol of the router's workers: proxied requests without ASGI.

uvicorn's httptools protocol turns every request into an ASGI scope, a
request-response cycle, an event and a task, and checks every response header
again; for a proxy in front of fast replicas that is about a third of its CPU
time per request. :class:`RouterProtocol` subclasses it: the router's own
paths (and websocket upgrades) still take uvicorn's ASGI path to the Falcon
app, while any other request becomes a :class:`~skyk_router.proxy.Exchange`
as soon as its head is parsed, and its answer is written to the client's
transport as the replica's bytes arrive, from the callbacks of both parsers.

It relies on internals of uvicorn's ``HttpToolsProtocol`` (uvicorn 0.54; the
range is pinned in the router's pyproject.toml):

* the parser callbacks ``on_message_begin``, ``on_url`` and ``on_header`` fill
  ``self.url``, ``self.headers`` and ``self.expect_100_continue``, and
  ``on_message_begin`` builds ``self.scope``, which ``on_headers_complete``
  completes and hands to the app;
* ``self.cycle`` is the latest request's cycle: ``connection_lost`` reads its
  ``response_complete`` and sets its ``disconnected`` and ``message_event``;
  ``shutdown`` reads ``response_complete`` and clears ``keep_alive``; a new
  request waits (``self.pipeline``, ``self.flow.pause_reading()``) while the
  previous cycle's ``response_complete`` is false, and ``on_response_complete``
  starts it with ``_start_asgi_task(cycle, app)``;
* ``self.server_state.default_headers`` are the Date and Server headers, and
  ``STATUS_LINE`` the status lines, that uvicorn writes; it answers a malformed
  request with ``send_400_response(msg)``;
* the keep-alive timeout: ``self.timeout_keep_alive_task`` (uvicorn arms it
  in ``on_response_complete`` and cancels it in ``_unset_keepalive_if_required``,
  which ``data_received`` and ``connection_lost`` call), ``self.timeout_keep_alive``
  and ``timeout_keep_alive_handler``. :class:`RouterProtocol` keeps one timer
  per idle connection instead of arming and cancelling one per request.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from skyk_router.app import RouterApp, is_proxied
from skyk_router.forwarding import client_address
from skyk_router.proxy import Exchange, Proxy
from skyk_router.replies import error_document, json_reply

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Statuses whose answers have no body, hence no chunked framing.
BODYLESS_STATUSES = frozenset({204, 304})


def proxy_of(app: Any) -> Proxy | None:
    """The proxy of the router app inside uvicorn's middleware, or None for another app."""
    while app is not None:
        if isinstance(app, RouterApp):
            return app.proxy
        app = getattr(app, "app", None)
    return None


class _NoEvent:
    """Stands in for a cycle's ``asyncio.Event``: nothing waits on a proxied request."""

    def set(self) -> None:
        """Do nothing (uvicorn sets it when the connection is lost)."""


_NO_EVENT = _NoEvent()


class ProxiedCycle:
    """A proxied request on one client connection, and the client side of its exchange.

    It takes the place of uvicorn's request-response cycle in ``self.cycle``
    (with the attributes uvicorn reads there), and writes the HTTP/1.1 answer
    (:class:`~skyk_router.proxy.Client`) straight to the transport.
    """

    __slots__ = ("exchange", "keep_alive", "response_complete", "disconnected", "body",
                 "more_body", "_protocol", "_transport", "_head", "_chunked", "_turn",
                 "_continue", "_out")
    message_event = _NO_EVENT

    def __init__(self, protocol: RouterProtocol, keep_alive: bool, head: bool,
                 expect_100_continue: bool) -> None:
        self.exchange: Exchange = None  # type: ignore[assignment]  # set right after
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.body: list[bytes] = []
        #: Whether more of the request body is to come.
        self.more_body = True
        self._protocol = protocol
        self._transport = protocol.transport
        self._head = head
        self._chunked = False
        self._turn = False
        self._continue = expect_100_continue
        #: Bytes for the client, held until the replica's read is told in full.
        self._out: list[bytes] = []

    def start(self) -> None:
        """Its turn on the connection came (the request before it, if any, is answered)."""
        self._turn = True
        protocol = self._protocol
        protocol.answering = self
        if protocol.flow.write_paused:
            self.exchange.pause()
        if not self.more_body:
            self.exchange.begin(b"".join(self.body))
        elif self._continue:
            self._transport.write(CONTINUE)

    def arrived(self) -> None:
        """The whole request arrived."""
        self.more_body = False
        if self._turn:
            self.exchange.begin(b"".join(self.body))

    # Client

    def respond(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:  # noqa: D102
        protocol = self._protocol
        if protocol.access_log:
            exchange = self.exchange
            protocol.access_logger.info('%s - "%s %s HTTP/1.1" %d', exchange.peer,
                                        exchange.method, exchange.target.decode("latin-1"),
                                        status)
        parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
        for name, value in protocol.server_state.default_headers:
            parts.append(name + b": " + value + b"\r\n")
        framed = False
        for name, value in headers:
            if not framed and len(name) == 14 and name.lower() == b"content-length":
                framed = True
            parts.append(name + b": " + value + b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        if not (framed or self._head or status in BODYLESS_STATUSES):
            # The replica's own framing (chunked, or up to its connection's end)
            # was hop-by-hop: the client's connection gets chunks of its own.
            self._chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        self._out.append(b"".join(parts))

    def write(self, data: bytes) -> None:  # noqa: D102
        if self._head or not data:
            return
        if self._chunked:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self._out.append(data)

    def flush(self) -> None:  # noqa: D102
        out = self._out
        if out:
            # One write, one system call: the head and the first chunks together.
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def end(self) -> None:  # noqa: D102
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        self.flush()
        self.response_complete = True
        protocol = self._protocol
        protocol.answering = None
        if not self.keep_alive:
            self._transport.close()
        protocol.on_response_complete()

    def abort(self) -> None:  # noqa: D102
        self.keep_alive = False
        self._protocol.answering = None
        self._transport.close()


class RouterProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with proxied requests handled by the proxy directly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proxy = proxy_of(self.app)
        #: The proxied request being answered on this connection, if any.
        self.answering: ProxiedCycle | None = None
        #: Loop time the connection went idle after its last answer; None while busy.
        self._idle_since: float | None = None

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        answering = self.answering
        if answering is not None:
            self.answering = None
            answering.disconnected = True
            answering.exchange.client_left()
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    # Keep-alive: uvicorn arms a timer after every answer and cancels it on the
    # next read; here a connection keeps one timer, which checks when it fires.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # busy: the timer, if armed, will see it

    def on_response_complete(self) -> None:  # noqa: D102
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next pipelined request's turn
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._check_keep_alive)

    def _check_keep_alive(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        if idle_since is None or self.transport.is_closing():
            return  # busy: on_response_complete arms the timer again
        idle_s = self.loop.time() - idle_since
        if idle_s >= self.timeout_keep_alive:
            self.timeout_keep_alive_handler()
        else:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive - idle_s, self._check_keep_alive)

    def pause_writing(self) -> None:  # noqa: D102
        super().pause_writing()
        if self.answering is not None:
            self.answering.exchange.pause()

    def resume_writing(self) -> None:  # noqa: D102
        super().resume_writing()
        if self.answering is not None:
            self.answering.exchange.resume()

    def send_400_response(self, msg: str) -> None:
        """Answer a malformed request in OpenAI's error shape (uvicorn's is plain text), and close."""
        headers, body = json_reply(error_document(400, msg, "bad_request"),
                                   [(b"connection", b"close")])
        parts = [STATUS_LINE[400]]
        for name, value in (*self.server_state.default_headers, *headers):
            parts.append(name + b": " + value + b"\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        self.transport.close()

    def on_message_begin(self) -> None:  # noqa: D102
        # The ASGI scope is built only for requests that go to the app.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:  # noqa: D102
        proxy = self._proxy
        parser = self.parser
        if proxy is None or (parser.should_upgrade() and self._should_upgrade()):
            self._to_app()
            return
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        if not is_proxied(path):
            self._to_app()
            return
        method = parser.get_method().decode("ascii")
        cycle = ProxiedCycle(
            self, parser.get_http_version() != "1.0" and parser.should_keep_alive(),
            method == "HEAD", self.expect_100_continue)
        query = url.query
        cycle.exchange = Exchange(proxy, cycle, method,
                                  raw_path + b"?" + query if query else raw_path,
                                  self.headers, client_address(self.client))
        previous = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            cycle.start()
        else:  # pipelined: answered after the requests before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, None))  # type: ignore[arg-type]

    def _to_app(self) -> None:
        """Hand the request to the ASGI app, as uvicorn does."""
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()  # builds the scope, and resets what the parser gathered
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        self.scope["headers"] = headers
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:  # noqa: D102
        cycle = self.cycle
        if type(cycle) is ProxiedCycle:
            cycle.body.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:  # noqa: D102
        cycle = self.cycle
        if type(cycle) is ProxiedCycle:
            cycle.arrived()
        else:
            super().on_message_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # Pipelined requests start here when their turn comes, proxied ones too.
        if type(cycle) is ProxiedCycle:
            cycle.start()
        else:
            super()._start_asgi_task(cycle, app)
