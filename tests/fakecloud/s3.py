"""A fake S3 for tests: moto's S3 server in this process, accepting one key pair.

:class:`FakeS3` runs moto's S3 Flask app behind a small WSGI layer on a free
port of ``127.0.0.1`` (or of ``host``, for node twins that reach it through
their bridge). Code under test reaches it only through the variables a user
would set to point the AWS SDKs elsewhere (:meth:`FakeS3.env`):
``AWS_ENDPOINT_URL_S3`` (botocore's per-service endpoint) and the ``AWS_*``
credentials. The layer adds what moto does not do: only the bed's access key
with a valid Signature Version 4 is accepted (``InvalidAccessKeyId`` or
``SignatureDoesNotMatch``, 403, otherwise), as S3 does. Each bed is a moto
account of its own, dropped again by :meth:`FakeS3.close`, so beds never see
each other's buckets::

    from fakecloud import FakeS3

    with FakeS3() as s3:
        s3.client().create_bucket(Bucket="data")
        run_skyk(env=s3.env())

A test that also runs a :class:`~fakecloud.FakeEC2` passes that bed's keys
(``FakeS3(access_key=ec2.access_key, secret_key=ec2.secret_key)``), so one set
of ``AWS_*`` credentials reaches both.
"""

from __future__ import annotations

import io
import itertools
import secrets
import shutil
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from . import sigv4
from .aws_accounts import drop_moto_account, empty_config_dir, sdk_env
from .serving import LoopbackServer

__all__ = ["FakeS3"]

#: The region ``env()`` names and ``client()`` uses.
DEFAULT_REGION = "us-east-1"
_BEDS = itertools.count(1)
_ACCOUNT_BASE = 220_000_000_000


@lru_cache(maxsize=1)
def _moto_app() -> Callable[..., Iterable[bytes]]:
    """moto's S3 Flask app; its state lives in moto's backends, per account, so every bed shares it."""
    from moto.moto_server.werkzeug_app import create_backend_app

    return create_backend_app("s3")


class FakeS3:
    """moto's S3 on a free port of ``host`` that accepts one access key (the bed's, or the given one)."""

    def __init__(self, *, host: str = "127.0.0.1", access_key: str | None = None,
                 secret_key: str | None = None):
        bed = next(_BEDS)
        self.host = host
        #: The moto account this bed's buckets live in.
        self.account_id = f"{_ACCOUNT_BASE + bed:012d}"
        #: The only access key the bed accepts, and its secret.
        self.access_key = access_key or f"AKIAFAKES3{bed:010d}"
        self.secret_key = secret_key or secrets.token_hex(20)
        #: ``http://HOST:PORT`` once started.
        self.endpoint = ""
        self._server: LoopbackServer | None = None
        self._config_dir: Path | None = None

    def start(self) -> FakeS3:
        """Start serving and wait until the server answers; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeS3 already started")
        _moto_app()
        self._drop_account()
        self._config_dir = empty_config_dir("fakes3-")
        self._server = LoopbackServer(self._wsgi, "fakes3", host=self.host)
        self.endpoint = self._server.endpoint
        # The socket listens before start() returns; one real call proves moto answers too.
        self.client().list_buckets()
        return self

    def close(self) -> None:
        """Stop the server and forget the bed's buckets."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None
        self._drop_account()

    def _drop_account(self) -> None:
        """Forget the bed's account, and its bucket names in S3's one namespace shared by all accounts."""
        from moto.s3.models import s3_backends

        for bucket, (_partition, account) in list(s3_backends.bucket_accounts.items()):
            if account == self.account_id:
                s3_backends.bucket_accounts.pop(bucket, None)
        drop_moto_account(self.account_id)

    def __enter__(self) -> FakeS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        """The variables that point the AWS SDKs (and skyk's S3 store) at this S3 and nothing else.

        The endpoint, the bed's credentials and region, empty AWS config and
        credentials files (so no profile of the user's leaks in) and no
        instance-metadata lookups.
        """
        if self._config_dir is None:
            raise RuntimeError("start the FakeS3 first")
        return {"AWS_ENDPOINT_URL_S3": self.endpoint,
                **sdk_env(self._config_dir, self.access_key, self.secret_key, DEFAULT_REGION)}

    def client(self, *, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """The test's own boto3 S3 client for this bed (to put objects and look at them)."""
        import boto3

        return boto3.client("s3", region_name=DEFAULT_REGION, endpoint_url=self.endpoint,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key)

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = _read_body(environ)
        # The client signed the path as it sent it, percent-encoded; werkzeug's PATH_INFO is decoded.
        signed = dict(environ, PATH_INFO=environ.get("REQUEST_URI", "").split("?", 1)[0]
                      or environ.get("PATH_INFO", "/"))
        _region, refusal = sigv4.authenticate(signed, body, self.access_key, self.secret_key)
        if refusal is not None:
            code = ("InvalidAccessKeyId" if "access key" in refusal
                    else "SignatureDoesNotMatch" if "does not match" in refusal else "AccessDenied")
            document = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{escape(refusal)}</Message><RequestId>fakes3</RequestId></Error>")
            answer = b"" if environ.get("REQUEST_METHOD") == "HEAD" else document.encode()
            start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                             ("Content-Length", str(len(answer)))])
            return [answer]
        environ = dict(environ, **{"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
                                   "HTTP_X_MOTO_ACCOUNT_ID": self.account_id})
        return _moto_app()(environ, start_response)


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request's body: by its length, or to the end of a chunked one."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length:
        return stream.read(length)
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    return b""
