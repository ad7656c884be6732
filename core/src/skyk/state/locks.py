"""Per-cluster locks, so two commands never change the same cluster at once.

``flock`` locks die with their process, so a killed ``skyk launch`` never
leaves a cluster locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator

from skyk.catalog.store import private_home
from skyk.errors import SkykError


@contextlib.contextmanager
def cluster_lock(name: str, timeout: float = 600) -> Iterator[None]:
    """Hold cluster ``name``'s lock for the block, waiting up to ``timeout`` seconds."""
    directory = private_home() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SkykError(f"cluster {name} is busy with another skyk command",
                                    hint="wait for it to finish, or check 'skyk status'") from None
                if not told:
                    print(f"Waiting for another skyk command on cluster {name}...", file=sys.stderr)
                    told = True
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
