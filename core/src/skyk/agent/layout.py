"""Where the agent keeps its files on a node: everything lives under the node's $HOME.

::

    ~/.skyk/agent/skyk_agent/   this package, as shipped by the CLI
    ~/.skyk/cluster.json        the cluster description, written by the CLI
    ~/.skyk/jobs.db             the job table (head node only)
    ~/.skyk/jobs/<id>/          spec.json, env.json (0600), context.json, run.log, part pgids
    ~/.skyk/agent.pid|log|lock  the daemon
    ~/.skyk/agent.beat          touched by the daemon on every turn of its loop
    ~/.skyk/rclone/             rclone.conf and the stores' secret files (0600), mount logs, caches
    ~/.skyk/mounts.json         the bucket mounts that run on this node (any node)
    ~/sky_workdir               the task's workdir, and where every job runs

Jobs run in ``~/sky_workdir`` (as in SkyPilot), never in the home itself:
a task that serves its working directory must not serve ``~/.skyk``, which
holds every job's secrets. ``~/.skyk`` and the job directories are 0700 and
the secrets file 0600, so other users of the node cannot read them either.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the package name the agent has on nodes (``python -m skyk_agent``)
NODE_PACKAGE = "skyk_agent"


def home() -> Path:
    """Return the node's home directory (``$HOME``: local sandboxes set their own)."""
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def state_dir() -> Path:
    """Return ``~/.skyk``."""
    return home() / ".skyk"


def agent_dir() -> Path:
    """Return the directory that holds the shipped package; it goes on PYTHONPATH."""
    return state_dir() / "agent"


def cluster_file() -> Path:
    return state_dir() / "cluster.json"


def db_file() -> Path:
    return state_dir() / "jobs.db"


def jobs_dir() -> Path:
    return state_dir() / "jobs"


def job_dir(job_id: int) -> Path:
    return jobs_dir() / str(int(job_id))


def log_file(job_id: int) -> Path:
    """Return the job's combined log (on the head node)."""
    return job_dir(job_id) / "run.log"


def pid_file() -> Path:
    return state_dir() / "agent.pid"


def beat_file() -> Path:
    """Return the file whose mtime the daemon sets on every turn of its loop (how health sees it answer)."""
    return state_dir() / "agent.beat"


def agent_log() -> Path:
    return state_dir() / "agent.log"


def lock_file() -> Path:
    """Return the file the daemon holds an exclusive flock on for as long as it lives."""
    return state_dir() / "agent.lock"


def start_lock_file() -> Path:
    """Return the file that serializes concurrent ``start`` commands."""
    return state_dir() / "agent.start.lock"


def wake_fifo() -> Path:
    """Return the named pipe that wakes the daemon (a byte written there means 'look again')."""
    return state_dir() / "agent.wake"


def autostop_log() -> Path:
    return state_dir() / "autostop.log"


def rclone_dir() -> Path:
    """Return ``~/.skyk/rclone``: rclone's config, the stores' secret files, mount logs and caches."""
    return state_dir() / "rclone"


def mounts_file() -> Path:
    """Return ``~/.skyk/mounts.json``, the record of the bucket mounts that run on this node."""
    return state_dir() / "mounts.json"


def jobs_daemon_file() -> Path:
    """Return the file naming the agent daemon this node's jobs start from, when it is another node's.

    A local cluster's worker in a network namespace has no daemon of its
    own: its jobs start from the head's daemon, in that daemon's mount namespace.
    """
    return state_dir() / "jobs-daemon.pid"


def mounts_lock_file() -> Path:
    """Return the file that serializes ``mount`` and ``unmount`` on this node."""
    return state_dir() / "mounts.lock"


#: where the task's workdir lands in a node's home (SkyPilot's name, so recipes that cd there work)
WORKDIR_NAME = "sky_workdir"


def workdir() -> Path:
    """Return where the CLI syncs the task's workdir and jobs run (SkyPilot's path, so recipes that cd there work)."""
    return home() / WORKDIR_NAME


def private_dir(path: Path) -> Path:
    """Create directory ``path`` (its parent must exist) for its owner only; narrow it if it exists.

    The chmod also mends a directory made wider by an older agent or by
    ``mkdir -p`` under the user's umask.
    """
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ensure_state_dir() -> Path:
    """Create ``~/.skyk`` and ``~/.skyk/jobs`` (both 0700) if needed; return ``~/.skyk``."""
    private_dir(state_dir())
    private_dir(jobs_dir())
    return state_dir()


def ensure_job_dir(job_id: int) -> Path:
    """Create the job's directory (0700, like ``~/.skyk`` above it) if needed; return it."""
    ensure_state_dir()
    return private_dir(job_dir(job_id))


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created 0600) for the ``with`` block, waiting for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def boot_id() -> str:
    """Return an id of this boot of the machine ('' where unknown).

    Recorded next to pids so a pid saved before the node was stopped and
    started again is never taken for a live process of ours.
    """
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def write_file(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``path`` atomically with permissions ``mode`` (the file never exists with wider ones)."""
    if isinstance(data, str):
        data = data.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own rather than tempfile's: importing tempfile costs every job start milliseconds.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed what open() created
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, obj: object, mode: int = 0o644) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_file(path, json.dumps(obj), mode)


def read_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def agent_command(python: str, args: str) -> str:
    """Return the shell command that runs the shipped agent with ``args`` on a node."""
    return f"PYTHONPATH=$HOME/.skyk/agent {shlex.quote(python)} -m {NODE_PACKAGE} {args}"


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """Return ``env`` without the agent's own PYTHONPATH entry, for user commands.

    The agent runs with ``~/.skyk/agent`` on PYTHONPATH; a job or the autostop
    command must not see our package on their import path.
    """
    env = dict(env)
    entries = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
               if p and os.path.abspath(os.path.expanduser(p)) != str(agent_dir())]
    if entries:
        env["PYTHONPATH"] = os.pathsep.join(entries)
    else:
        env.pop("PYTHONPATH", None)
    return env
