"""A stand-in SkyServe controller, so SkyServe's load balancer runs on its own.

Usage: python benchmarks/skyserve_controller.py --port N --replica URL [--replica URL ...]

SkyServe's load balancer (``python -m sky.serve.load_balancer --controller-addr
URL --load-balancer-port N``, SkyPilot 0.14) learns its replicas by posting
its request counts to ``POST {controller}/controller/load_balancer_sync``
every 20 s (the first time 5 s after it starts), and reads the ready replicas
from the keys of ``replica_info`` in the answer. This server gives that
answer, with the replicas from the command line, and ignores what it is sent.
Standard library only, and bound to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SYNC_PATH = "/controller/load_balancer_sync"


def handler_for(replicas: list[str]) -> type[BaseHTTPRequestHandler]:
    """A request handler answering the load balancer's sync with ``replicas``."""
    body = json.dumps({"replica_info": {url: {} for url in replicas}}).encode()

    class SyncHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)  # the request counts; not needed here
            if self.path != SYNC_PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one sync every 20 s; nothing worth logging

    return SyncHandler


def main() -> None:
    """Serve the sync endpoint on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replica", action="append", required=True, metavar="URL",
                        help="a ready replica's base URL (repeatable)")
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(args.replica)).serve_forever()


if __name__ == "__main__":
    main()
