"""Progress for long waits: a line per step, and a sign of life while one takes long.

On a terminal a spinner turns beside the step; elsewhere (CI logs, pipes) a
"still ..." line is printed every few seconds instead, so a wait is never
silent. Everything goes to stderr, keeping stdout for the job's output.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Iterator

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
#: seconds between "still ..." lines when stderr is not a terminal
_HEARTBEAT = 10.0


def say(message: str) -> None:
    """Print one progress line."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Show ``message`` while the block runs, then how long it took."""
    start = time.monotonic()
    done = threading.Event()
    tty = sys.stderr.isatty()
    if not tty:
        say(f"⚙ {message}...")

    def pulse() -> None:
        frames = itertools.cycle(_FRAMES)
        while not done.wait(0.1 if tty else _HEARTBEAT):
            elapsed = time.monotonic() - start
            if tty:
                sys.stderr.write(f"\r{next(frames)} {message}... {elapsed:.0f}s")
                sys.stderr.flush()
            else:
                say(f"  still {message[0].lower() + message[1:]} ({elapsed:.0f}s)")

    thread = threading.Thread(target=pulse, daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        done.set()
        thread.join()
        if tty:
            sys.stderr.write("\r\033[K")
        raise
    done.set()
    thread.join()
    prefix = "\r\033[K" if tty else ""
    sys.stderr.write(f"{prefix}✓ {message} ({time.monotonic() - start:.1f}s)\n")
    sys.stderr.flush()
