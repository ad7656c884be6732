"""A replica that dies as each connection opens: ``python resetting_server.py --port N``.

It accepts every TCP connection and resets it at once (RST, no byte sent),
as the connections a replica had not yet accepted are reset when it is killed.
A proxy sees its new connection succeed and then break before it sent anything.
"""

from __future__ import annotations

import argparse
import socket
import struct


def main() -> None:
    """Accept and reset connections on loopback until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", args.port))
        server.listen(1024)
        while True:
            connection, _ = server.accept()
            # Linger 0: close() sends RST rather than FIN.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()


if __name__ == "__main__":
    main()
