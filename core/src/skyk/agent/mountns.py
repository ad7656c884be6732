"""Mount tables and mount namespaces on a node, for the bucket mounts of :mod:`.mounts`.

On a VM every command of a node shares one mount namespace. A local
sandbox with its own network namespace does not: ``ip netns exec`` gives
each command it runs a private copy of the machine's mount table, so a FUSE
mount made by one agent command is seen neither by the next command nor by
the jobs, which run in copies of the daemon's namespace. So a mount is made
in the daemon's namespace when the node has a daemon in another namespace
(:func:`jobs_pid`), and looked for and undone in the namespace of the rclone
that serves it (:func:`enter`, :func:`is_mounted`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from . import layout, procs

_ESCAPE = re.compile(r"\\([0-7]{3})")


def namespace(pid: int | str) -> str | None:
    """Return the id of ``pid``'s mount namespace (``self`` for ours), or None if it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def enter(pid: int | None) -> list[str]:
    """Return the argv prefix that runs a command in ``pid``'s mount namespace ([] when it is ours)."""
    if not pid:
        return []
    theirs = namespace(pid)
    if theirs is None or theirs == namespace("self"):
        return []
    nsenter = shutil.which("nsenter")
    return [nsenter, f"--mount=/proc/{pid}/ns/mnt", "--"] if nsenter else []


def jobs_pid() -> int | None:
    """Return the pid of the agent daemon this node's jobs start from, if it runs in another namespace.

    That is this node's own daemon, or, on a local cluster's worker, the
    head's (named in :func:`layout.jobs_daemon_file` by the CLI's ``mount``).
    """
    for source in (layout.pid_file(), layout.jobs_daemon_file()):
        try:
            pid = int(source.read_text().strip())
        except (OSError, ValueError):
            continue
        argv = procs.cmdline(pid) or []
        if procs.pid_alive(pid) and "daemon" in argv and enter(pid):
            return pid
    return None


def made_for_this_command() -> bool:
    """Whether our mount namespace is one that ``ip netns exec`` made for the command running us.

    Then a mount made here is seen by nothing that runs later: an ancestor
    of ours (the CLI, the daemon) lives in another mount namespace.
    """
    ours, pid = namespace("self"), os.getppid()
    for _ in range(16):  # a short chain: agent, bash, ip netns exec'd shell, caller
        if not pid or pid <= 1:
            return False
        theirs = namespace(pid)
        if theirs is not None and theirs != ours:
            return True
        pid = procs.parent_pid(pid)
    return False


def mount_points(pid: int | None = None) -> set[str] | None:
    """Return the mount points in ``pid``'s namespace (ours by default); None if /proc cannot say."""
    try:
        text = Path(f"/proc/{pid or 'self'}/mountinfo").read_text()
    except OSError:
        return None
    # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
    return {_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
            for line in text.splitlines() if len(line.split()) > 4}


def is_mounted(dest: Path, pid: int | None = None) -> bool:
    """Whether ``dest`` is a mount point in ``pid``'s namespace (ours by default), live or not."""
    points = mount_points(pid)
    return os.path.ismount(dest) if points is None else str(dest) in points


def disconnected(path: Path) -> bool:
    """Whether ``path`` is a FUSE mount whose server is gone: it answers ENOTCONN.

    Only once the kernel's attribute cache has expired (a second, for
    rclone): right after its rclone dies, a mount still looks alive.
    """
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False
