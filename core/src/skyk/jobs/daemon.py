"""The jobs controller as a process: one for all managed jobs, started when there is work.

The controller holds an exclusive lock on ``$SKYK_HOME/jobs/controller.lock``
for as long as it runs (the kernel drops it when the process dies, however it
dies), so "is a controller running?" never trusts a stale pid file, and two
commands that start one at the same moment leave only one running. It exits
once no job is left to see through; the next ``skyk jobs`` command that finds
unfinished jobs without a controller starts it again, and the new one resumes
every job from the state database.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from skyk.catalog.store import private_home

#: seconds a new controller may take to take its lock
START_TIMEOUT = 10.0


def jobs_dir() -> Path:
    """Where managed jobs keep their logs and the controller its lock (private: logs may hold secrets)."""
    path = private_home() / "jobs"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def job_log(job_id: int) -> Path:
    """The log of every attempt of job ``job_id``, kept past its clusters and the controller."""
    return jobs_dir() / f"{int(job_id)}.log"


def controller_log() -> Path:
    """The controller's own log."""
    return jobs_dir() / "controller.log"


def _lock_path() -> Path:
    return jobs_dir() / "controller.lock"


def hold_lock() -> int | None:
    """Take the controller's lock for this process; return its descriptor, or None if another holds it."""
    fd = os.open(_lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def running_pid() -> int | None:
    """The running controller's pid, or None when none runs (its lock is free)."""
    path = _lock_path()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def ensure_running() -> tuple[int, bool]:
    """Start the controller unless one runs; return its pid and whether this call started it."""
    from skyk.errors import SkykError

    pid = running_pid()
    if pid is not None:
        return pid, False
    with open(controller_log(), "ab") as out:
        os.chmod(controller_log(), 0o600)
        # Its own session: Ctrl-C in the command that started it does not reach it.
        proc = subprocess.Popen([sys.executable, "-m", "skyk.jobs.controller"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = running_pid()
        if pid is not None:
            return pid, pid == proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise SkykError("the jobs controller did not start", hint=f"see {controller_log()}")
