"""A stand-in for an inference engine, run as a service replica: ``python3 fake_engine.py PORT``.

Standard library only, because replicas run with the node's plain python.

- ``GET /`` (any path not below): ``replica ID version V`` (from ``SKYK_SERVE_REPLICA_ID`` and
  ``VERSION``), after ``DELAY`` seconds (env, default 0);
- ``GET /health``: 200, or 503 forever with ``HEALTHY=0`` (a replica that never becomes ready);
- ``GET /health/V``: 200 when ``V`` is its own ``VERSION``, else 404 (a probe that changes by version);
- ``GET /metrics``: Prometheus text with ``vllm:num_requests_waiting`` (and SGLang's
  ``sglang:num_queue_reqs``) set to the queue length;
- ``POST /-/queue`` with a number as body: sets the queue length the metrics report.
"""

from __future__ import annotations

import http.server
import os
import sys
import time

QUEUE = [0.0]
NAME = f"replica {os.environ.get('SKYK_SERVE_REPLICA_ID', '?')} version {os.environ.get('VERSION', '1')}"
DELAY = float(os.environ.get("DELAY", "0"))
HEALTHY = os.environ.get("HEALTHY", "1") != "0"


class Handler(http.server.BaseHTTPRequestHandler):
    """The engine's few routes."""

    protocol_version = "HTTP/1.1"

    def _reply(self, body: str, status: int = 200, kind: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's API
        if self.path == "/health":
            self._reply("ok" if HEALTHY else "loading", 200 if HEALTHY else 503)
        elif self.path.startswith("/health/"):
            mine = self.path == f"/health/{os.environ.get('VERSION', '1')}"
            self._reply("ok" if mine else "not my version", 200 if mine else 404)
        elif self.path == "/metrics":
            self._reply("# HELP vllm:num_requests_waiting Requests waiting.\n"
                        "# TYPE vllm:num_requests_waiting gauge\n"
                        f'vllm:num_requests_waiting{{model_name="fake, engine"}} {QUEUE[0]}\n'
                        f"sglang:num_queue_reqs 0\n", kind="text/plain; version=0.0.4")
        else:
            time.sleep(DELAY)
            self._reply(NAME)

    def do_POST(self) -> None:  # noqa: N802 - http.server's API
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/-/queue":
            QUEUE[0] = float(body)
            self._reply("ok")
        else:
            self._reply(NAME)

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer.daemon_threads = True
    server = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler)
    print(f"{NAME} listening on port {sys.argv[1]}", flush=True)  # what 'serve logs' shows
    server.serve_forever()
