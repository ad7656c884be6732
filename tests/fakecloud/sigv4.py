"""AWS Signature Version 4, checked the way AWS checks it: the fakes of AWS services accept one key.

:func:`authenticate` recomputes a request's signature from the bed's secret
key, so a client that holds a wrong secret (or signs the wrong request) is
refused as AWS would refuse it, not only one that names an unknown key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")
_SIGNED_HEADERS = re.compile(r"SignedHeaders=([^,\s]+)")
_SIGNATURE = re.compile(r"Signature=([0-9a-f]+)")


def authenticate(environ: dict[str, Any], body: bytes, access_key: str,
                 secret_key: str) -> tuple[str | None, str | None]:
    """``(region, None)`` for a request signed with ``access_key`` and its secret, else ``(region, why)``.

    ``environ``'s ``PATH_INFO`` must be the path as the client sent it (still
    percent-encoded), which is what the client signed.
    """
    auth = environ.get("HTTP_AUTHORIZATION", "")
    credential = _CREDENTIAL.search(auth)
    if not auth.startswith("AWS4-HMAC-SHA256") or credential is None:
        return None, "The request is not signed with AWS Signature Version 4."
    key, date, region, service = credential.groups()
    if key != access_key:
        return region, "The access key is not known to this account."
    signed = _SIGNED_HEADERS.search(auth)
    signature = _SIGNATURE.search(auth)
    if signed is None or signature is None:
        return region, "The request signature is incomplete."
    expected = signature_of(environ, body, signed.group(1).split(";"), secret_key, date, region, service)
    if not hmac.compare_digest(expected, signature.group(1)):
        return region, "The request signature does not match the secret key."
    return region, None


def header(environ: dict[str, Any], name: str) -> str:
    """The value of request header ``name`` (lower case) in a WSGI ``environ``."""
    if name == "content-type":
        return environ.get("CONTENT_TYPE", "")
    if name == "content-length":
        return environ.get("CONTENT_LENGTH", "")
    return environ.get("HTTP_" + name.upper().replace("-", "_"), "")


def signature_of(environ: dict[str, Any], body: bytes, signed_headers: list[str],
                 secret: str, date: str, region: str, service: str) -> str:
    """The AWS Signature Version 4 a client holding ``secret`` computes for this request."""
    canonical_headers = "".join(
        f"{name}:{' '.join(header(environ, name).split())}\n" for name in signed_headers)
    pairs = sorted(pair.partition("=")[::2]
                   for pair in environ.get("QUERY_STRING", "").split("&") if pair)
    payload = header(environ, "x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([environ.get("REQUEST_METHOD", "POST"),
                           environ.get("PATH_INFO", "") or "/",
                           "&".join(f"{k}={v}" for k, v in pairs),
                           canonical_headers, ";".join(signed_headers), payload])
    timestamp = header(environ, "x-amz-date")
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", timestamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
