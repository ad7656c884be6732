"""The ``logs`` command: print a job's log, from its last lines if asked, and follow it."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from . import jobs, layout

#: how often ``--follow`` looks for new output: the latency a reader sees
_POLL_SECONDS = 0.05


def tail_offset(path: Path, lines: int) -> int:
    """Return the offset in ``path`` where its last ``lines`` lines begin."""
    if lines <= 0:
        return os.path.getsize(path)
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        # A last line without its newline still counts as a line.
        f.seek(end - 1)
        wanted = lines + 1 if f.read(1) == b"\n" else lines
        pos, found = end, 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            i = len(block)
            while (i := block.rfind(b"\n", 0, i)) != -1:
                found += 1
                if found == wanted:
                    return pos + i + 1
        return 0


def read_from(job_id: int, offset: int, limit: int) -> bytes:
    """Return up to ``limit`` bytes of job ``job_id``'s log from byte ``offset`` (none yet: empty)."""
    try:
        with open(layout.log_file(job_id), "rb") as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def stream(conn: sqlite3.Connection, job_id: int, follow: bool, tail: int | None) -> None:
    """Copy job ``job_id``'s log to stdout as raw bytes; with ``follow``, until the job has ended.

    Output goes straight to file descriptor 1, unbuffered, so a reader sees
    each line within ``_POLL_SECONDS`` of the driver writing it.
    """
    jobs.get(conn, job_id)  # raises UnknownJob
    path = layout.log_file(job_id)
    f = None
    try:
        while f is None:
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                # Not started yet (PENDING), or ended without output.
                if not follow or jobs.get(conn, job_id).status in jobs.TERMINAL:
                    if path.exists():
                        continue
                    return
                time.sleep(_POLL_SECONDS)
        if tail is not None:
            f.seek(tail_offset(path, tail))
        ended = False
        while True:
            chunk = f.read(65536)
            if chunk:
                _write(chunk)
                continue
            if not follow or ended:
                return
            # The driver has written everything before it marks the job
            # ended, so one more read after seeing the end drains the log.
            ended = jobs.get(conn, job_id).status in jobs.TERMINAL
            if not ended:
                time.sleep(_POLL_SECONDS)
    finally:
        if f is not None:
            f.close()
