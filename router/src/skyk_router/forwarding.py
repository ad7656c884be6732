"""What the proxy passes on: the request head a replica gets, the response headers a client gets.

Everything stays in bytes, as the ASGI server gave it (header names in lower
case) and as the replica's connection wants it: the client's path and query
reach the replica byte for byte, and no header is decoded on the way.
"""

from __future__ import annotations

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
#: Also dropped from requests: the head sets Host and Content-Length for the
#: replica's connection, and the body is already read, so there is nothing to continue.
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
#: Also dropped from responses: the ASGI server writes its own Date and Server on
#: every response, and a second Date would break a single-value field (nginx
#: likewise replaces both by default).
NOT_RELAYED = HOP_BY_HOP | {b"date", b"server"}
#: Methods whose requests go without a Content-Length when they have no body;
#: the others say ``Content-Length: 0`` (as aiohttp, the router's former client, did).
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "CONNECT", "TRACE"})


def has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request headers (ASGI: lower-case names) announce a body to read."""
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of the first header called ``name`` (lower case), or None."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def client_address(client: tuple[str, int] | None) -> str:
    """The client's address (an ASGI ``client`` pair), loopback when unknown."""
    return client[0] if client else "127.0.0.1"


def forwarded_headers(raw: list[tuple[bytes, bytes]],
                      client: str | None) -> list[tuple[bytes, bytes]]:
    """The client's request headers to send upstream, without hop-by-hop ones.

    The client's address is appended to ``X-Forwarded-For`` (the proxies before
    this one stay listed first).
    """
    dropped = NOT_FORWARDED
    for name, value in raw:
        if name == b"connection":  # headers named in Connection are hop-by-hop too
            dropped = dropped | {token.strip().lower() for token in value.split(b",")}
    kept = []
    previous = []
    for name, value in raw:
        if name in dropped:
            continue
        if name == b"x-forwarded-for" and client:
            previous.append(value)
        else:
            kept.append((name, value))
    if client:
        kept.append((b"x-forwarded-for", b", ".join([*previous, client.encode("latin-1")])))
    return kept


def request_head_tail(headers: list[tuple[bytes, bytes]], method: str, client: str,
                      body: bytes) -> bytes:
    """The part of the request head after the Host line, the same for every replica."""
    lines = [name + b": " + value + b"\r\n"
             for name, value in forwarded_headers(headers, client)]
    if body or method not in BODYLESS_METHODS:
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines)


def request_target(scope: dict) -> bytes:
    """The path and query the client sent, as it sent them (from an ASGI scope)."""
    target = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string")
    return target + b"?" + query if query else target


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A replica's response headers to pass on: all but hop-by-hop ones, Date and Server."""
    return [(name, value) for name, value in headers if name.lower() not in NOT_RELAYED]
