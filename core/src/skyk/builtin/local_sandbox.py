"""The local cloud's node sandboxes: their directories, and finding and killing their processes.

A cluster lives in ``SKYK_HOME/local/<cluster>-<uid>/``; node ``rank`` is the
directory ``node<rank>`` in it, which is the node's ``$HOME``. Every process
a :class:`~skyk.agent.runners.LocalRunner` starts carries the node's marker
in its environment (``SKYK_NODE_ID``), and children inherit it, so a scan of
``/proc/*/environ`` finds all of a node's processes, including daemons that
double-forked and left their session. A namespaced node's processes are
also found by their network namespace, which no process can leave without
root. (A loopback node's process that clears its environment, ``env -i``,
escapes both; that is the fallback mode's limit.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from skyk.agent.runners import NODE_MARKER
from skyk.catalog.store import skyk_home

#: How long processes get to exit after SIGTERM before SIGKILL.
GRACE_SECONDS = 2.0
#: How long to keep killing processes that survive SIGKILL (uninterruptible sleep).
_KILL_SECONDS = 3.0
_STOPPED = "stopped"


def cluster_root(cluster: str, uid: str) -> Path:
    """Return the directory holding a cluster's node homes."""
    return skyk_home() / "local" / f"{cluster}-{uid}"


def make_homes(root: Path, num_nodes: int) -> list[Path]:
    """Create empty node homes ``node0..`` in the cluster directory ``root``."""
    homes = [root / f"node{rank}" for rank in range(num_nodes)]
    for home in homes:
        home.mkdir(mode=0o755)
    return homes


def mark_stopped(root: Path) -> None:
    """Record that the cluster was stopped (it keeps its files)."""
    (root / _STOPPED).touch()


def clear_stopped(root: Path) -> None:
    """Forget that the cluster was stopped."""
    (root / _STOPPED).unlink(missing_ok=True)


def is_stopped(root: Path) -> bool:
    """Return whether the cluster was stopped and not started since."""
    return (root / _STOPPED).exists()


def mounts_under(root: Path) -> list[str]:
    """The mount points at or below ``root`` (a node's bucket mounts), deepest first."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    # Field 5 is the mount point, with spaces and the like written as octal escapes.
    points = [line.split()[4].encode().decode("unicode_escape") for line in lines if len(line.split()) > 4]
    return sorted({p for p in points if (p + "/").startswith(prefix)}, key=len, reverse=True)


def release_mounts(root: Path) -> None:
    """Detach whatever is still mounted below ``root``: the mounts of a node whose processes were killed.

    The node's agent unmounts its buckets (flushing their writes) before its
    cluster stops; this only clears what a killed rclone left, a mount point
    that answers nothing and that no file operation below it could pass.
    """
    for point in mounts_under(root):
        for command in (["fusermount3", "-uz", point], ["fusermount", "-uz", point], ["umount", "-l", point]):
            try:
                if subprocess.run(command, capture_output=True, timeout=30).returncode == 0:
                    break
            except (OSError, subprocess.SubprocessError):
                continue


def remove(root: Path) -> None:
    """Delete a cluster's directory and everything in it; nothing if already gone."""
    shutil.rmtree(root, ignore_errors=True)


def find_processes(markers: Iterable[str], netns_inodes: Iterable[int] = ()) -> list[int]:
    """Return the pids of processes marked with one of ``markers`` or in one of the namespaces.

    Never this process itself: the autostop command, run inside a node,
    tears down the node it runs in and must live to finish.
    """
    needles = {f"{NODE_MARKER}={marker}".encode() for marker in markers}
    namespaces = {f"net:[{inode}]" for inode in netns_inodes}
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # exited, or another user's
            environ = b""
        if needles.intersection(environ.split(b"\0")):
            found.append(int(entry.name))
            continue
        if namespaces:
            try:
                if os.readlink(f"/proc/{entry.name}/ns/net") in namespaces:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def kill_processes(markers: Iterable[str], netns_inodes: Iterable[int] = (),
                   grace: float = GRACE_SECONDS) -> None:
    """Kill every process :func:`find_processes` finds: SIGTERM, then SIGKILL after ``grace``.

    Scans again until none is left, so children forked meanwhile die too.
    Returns as soon as all are gone; gives up on processes that survive
    SIGKILL for a few seconds (stuck in the kernel).
    """
    markers, netns_inodes = list(markers), list(netns_inodes)
    start = time.monotonic()
    asked: set[int] = set()
    pause = 0.005
    while True:
        pids = find_processes(markers, netns_inodes)
        elapsed = time.monotonic() - start
        if not pids or elapsed > grace + _KILL_SECONDS:
            return
        force = elapsed >= grace
        for pid in pids:
            if force or pid not in asked:
                try:
                    os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
                asked.add(pid)
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
