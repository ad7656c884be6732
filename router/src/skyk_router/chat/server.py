"""The chat page on its own: ``python3 server.py --upstream HOST:PORT``.

The router serves the chat page itself, at ``/-/chat``. This server gives the
page a cluster of its own (``examples/gui.yaml``): it serves the same files at
the same path and relays ``/v1/*`` to the service endpoint, passing each
piece of a streamed answer on as it arrives, so tokens show as they are made.

Standard library only, so it runs with a node's plain ``python3``; the
router imports :data:`PAGE_PATH` and :func:`page_file` from here, so the two
serve one page.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import urllib.parse
from pathlib import Path

#: Where the page lives, on the router and here alike (the page links its files by it).
PAGE_PATH = "/-/chat"
#: The page's files: name under ``PAGE_PATH/`` ("" is the page) -> (file here, content type).
PAGE_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "chat.css": ("chat.css", "text/css; charset=utf-8"),
    "chat.js": ("chat.js", "text/javascript; charset=utf-8"),
}
#: Sent with every file: always revalidated (an upgraded router serves the new page),
#: never sniffed, and the page may talk to its own origin only.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}
HERE = Path(__file__).resolve().parent
#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1);
#: Host and Content-Length are set anew for the upstream connection.
NOT_FORWARDED = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect"})
#: Seconds the endpoint may stay silent: a non-streamed completion answers only when done.
UPSTREAM_IDLE_S = 600.0


def page_file(name: str) -> tuple[bytes, str] | None:
    """The bytes and content type of the page's file ``name`` ("" is the page), or None."""
    entry = PAGE_FILES.get(name)
    if entry is None:
        return None
    filename, content_type = entry
    return (HERE / filename).read_bytes(), content_type


def upstream_parts(endpoint: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an endpoint written ``HOST:PORT`` or as a URL."""
    parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an HTTP endpoint: {endpoint!r}")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class ChatHandler(http.server.BaseHTTPRequestHandler):
    """Serves the page and relays the API; :func:`serve` sets the endpoint."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, str, int] = ("http", "127.0.0.1", 80)

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, document: dict) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _drain_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:  # noqa: N802 - http.server's API
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/v1/"):
            self._relay()
        elif path in ("/", ""):
            self._send(302, b"", "text/plain", {"Location": PAGE_PATH})
        elif path == "/-/health":
            self._json(200, {"status": "ok"})
        elif path == PAGE_PATH or path.startswith(PAGE_PATH + "/"):
            found = page_file(path[len(PAGE_PATH) + 1:])
            if found is None:
                self._json(404, {"error": f"no such file {path}"})
            else:
                self._send(200, *found, PAGE_HEADERS)
        else:
            self._json(404, {"error": f"not found: {path}",
                             "hint": f"the page is at {PAGE_PATH}; the API at /v1/"})

    do_HEAD = do_GET

    def _other(self) -> None:
        if self.path.startswith("/v1/"):
            self._relay()
        else:
            self._drain_body()
            self._json(405, {"error": f"{self.command} is only relayed under /v1/"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _other

    def _relay(self) -> None:
        """Send the request to the endpoint and pass its answer on as it arrives."""
        body = self._drain_body()
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() not in NOT_FORWARDED}
        scheme, host, port = self.upstream
        connection_class = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        upstream = connection_class(host, port, timeout=UPSTREAM_IDLE_S)
        try:
            try:
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
            except (OSError, http.client.HTTPException) as error:
                self._json(502, {"error": f"the service endpoint {host}:{port} did not answer",
                                 "hint": f"{error!r}; check the ENDPOINT this server was given"})
                return
            # The endpoint's own Date and Server headers come through below.
            self.send_response_only(answer.status, answer.reason)
            length = answer.getheader("Content-Length")
            for name, value in answer.getheaders():
                if name.lower() not in NOT_FORWARDED:
                    self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", length)
            else:
                # A stream of unknown length ends when this connection closes:
                # simpler than re-chunking, and every HTTP client reads it so.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            # read1 returns what has arrived (at most one chunk) instead of
            # waiting to fill a buffer: each event goes out as it comes in.
            while chunk := answer.read1(65536):
                self.wfile.write(chunk)
        except (OSError, http.client.HTTPException):
            # The browser left, or the endpoint broke off mid-answer. Closing both
            # connections tells each side: the endpoint stops generating, the
            # browser sees a truncated answer rather than a complete one.
            self.close_connection = True
        finally:
            upstream.close()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's API
        pass  # quiet: the service's own logs record the requests


def serve(host: str, port: int, endpoint: str) -> http.server.ThreadingHTTPServer:
    """A server on ``host:port`` for the page, relaying ``/v1/*`` to ``endpoint``; not started."""
    handler = type("BoundChatHandler", (ChatHandler,), {"upstream": upstream_parts(endpoint)})
    http.server.ThreadingHTTPServer.daemon_threads = True
    return http.server.ThreadingHTTPServer((host, port), handler)


def main() -> None:
    """Serve the page until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # On a node, bind $SKYK_NODE_IP: local nodes without a network namespace
    # share this machine's ports, but each has its own address.
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument("--upstream", default=os.environ.get("ENDPOINT"),
                        help="the service endpoint, HOST:PORT or a URL (default $ENDPOINT)")
    args = parser.parse_args()
    if not args.upstream:
        parser.error("give --upstream HOST:PORT (or set $ENDPOINT)")
    try:
        server = serve(args.host, args.port, args.upstream)
    except ValueError as error:
        parser.error(str(error))
    print(f"chat page on http://{args.host}:{args.port}{PAGE_PATH}, "
          f"relaying /v1/ to {args.upstream}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
