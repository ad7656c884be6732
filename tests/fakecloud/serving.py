"""The fakes' HTTP server: werkzeug's threaded server on 127.0.0.1 (or a given address), quiet, in a daemon thread."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without a log line per request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class LoopbackServer:
    """Serve ``app`` on a free port of ``host`` until :meth:`close` (over TLS with ``ssl_context``).

    ``host`` is loopback unless a test must reach the server from elsewhere
    (a node twin's namespace, through its bridge's address).
    """

    def __init__(self, app: Callable[..., Any], name: str, ssl_context: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1"):
        self._server = make_server(host, 0, app, threaded=True, request_handler=_QuietHandler,
                                   ssl_context=ssl_context)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        #: ``http(s)://HOST:PORT``
        self.endpoint = f"{'https' if ssl_context else 'http'}://{host}:{self.port}"
        # A short poll interval: close() waits for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name=f"{name}-{self.port}")
        self._thread.start()

    def close(self) -> None:
        """Stop serving and wait for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
