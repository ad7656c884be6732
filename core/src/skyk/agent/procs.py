"""Finding and killing process groups on this node.

Zombies count as gone everywhere here: a killed process whose parent has
not reaped it yet (or whose parent is an init that never reaps) runs nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: str | int) -> list[str] | None:
    """Return the fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; it ends at the last ')'.
    return raw[raw.rfind(b")") + 2:].decode(errors="replace").split()


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (None: no process)."""
    if not pid or pid <= 0:
        return False
    if _PROC.is_dir():
        fields = _stat_fields(pid)
        return fields is not None and fields[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parent_pid(pid: int) -> int | None:
    """Return the pid of ``pid``'s parent (None if it is gone or /proc cannot say)."""
    fields = _stat_fields(pid)
    try:
        return int(fields[1]) if fields else None
    except (IndexError, ValueError):
        return None


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group ``pgid``."""
    if pgid <= 1:
        return False
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        # fields: state, ppid, pgrp, ...
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def cmdline(pid: int) -> list[str] | None:
    """Return the argv of ``pid`` (None if it is gone or cannot be read)."""
    if _PROC.is_dir():
        try:
            raw = (_PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        return raw.decode(errors="replace").split("\0")[:-1] or None
    try:
        out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.split() or None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_group(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for group ``pgid`` to empty; return whether it did."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def kill_group(pgid: int, grace: float = 2.0, leader_first: bool = False) -> None:
    """Stop process group ``pgid``: SIGTERM, then SIGKILL after ``grace`` seconds.

    With ``leader_first``, SIGTERM goes to the group leader alone when it is
    alive, and the leader passes it on to the group (the ``part`` wrapper
    does): the user's processes then get one SIGTERM, not two, which matters
    to launchers that take a second signal as "abort now".
    """
    if pgid <= 1 or pgid == os.getpgrp():
        return  # never the init group, never ourselves
    if leader_first and pid_alive(pgid):
        try:
            os.kill(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        _signal_group(pgid, signal.SIGTERM)
    if wait_group(pgid, grace):
        return
    _signal_group(pgid, signal.SIGKILL)
    wait_group(pgid, 2.0)
