"""A replica's server job, as its cluster's agent sees it: whether it has ended, and its log.

The controller asks while a replica is starting, so a server that crashed
is failed in seconds (not after ``initial_delay_seconds``), and saves the
log of every replica it tears down, so ``skyk serve logs NAME ID`` still
shows it once the cluster is gone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from skyk.errors import SkykError, printable
from skyk.lifecycle.jobs import DONE
from skyk.lifecycle.lookup import head_client
from skyk.provision.types import ClusterHandle

#: seconds one question to the agent may take
AGENT_TIMEOUT = 30.0
#: log lines quoted in the note of a replica whose server ended
NOTE_LINES = 5
#: longest note, in characters (the status table shows it on one line)
NOTE_CHARS = 500
#: log lines kept of a torn-down replica
SAVED_LINES = 5000


def _server_job(handle: ClusterHandle):
    """The agent client and the replica's server job (its cluster's newest), or None before it is queued."""
    client = head_client(handle, timeout=AGENT_TIMEOUT)
    jobs = client.queue()
    return client, (jobs[0] if jobs else None)


def _log_tail(client, job_id: int, lines: int) -> bytes:
    proc = client.logs(job_id, follow=False, tail=lines)
    try:
        out, _ = proc.communicate(timeout=AGENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or b""


def server_ended(handle: ClusterHandle) -> str | None:
    """Why the replica's server can never become ready (its job ended), or None while it runs.

    The answer names the exit code and quotes the last log lines on one line.
    None too when the agent cannot say: the readiness probe still decides then.
    """
    try:
        client, job = _server_job(handle)
        if job is None or job["status"] not in DONE:
            return None
        tail = _log_tail(client, job["id"], NOTE_LINES)
    except (SkykError, OSError):  # the agent cannot say
        return None
    code = job.get("exit_code")
    why = f"its server exited with code {code}" if code is not None else f"its server job is {job['status']}"
    lines = (line.strip() for line in tail.decode(errors="replace").splitlines())
    # Escaped as every error line is: the server's output must not drive the terminal. Not
    # shortened there: the end of the log, kept below, says most about a crash.
    last = printable(" | ".join(line for line in lines if line), limit=len(tail) * 4 + 16)
    if not last:
        return f"{why} ({job['status']}), with no output"
    prefix = f"{why} ({job['status']}); last lines: "
    room = NOTE_CHARS - len(prefix)
    # The end of the log says most about a crash: shorten from the front.
    return prefix + (last if len(last) <= room else "…" + last[-(room - 1):])


def save_log(handle: ClusterHandle, path: Path) -> bool:
    """Write the last ``SAVED_LINES`` lines of the replica's server log to ``path``; False if there is none."""
    try:
        client, job = _server_job(handle)
        if job is None:
            return False
        data = _log_tail(client, job["id"], SAVED_LINES)
    except (SkykError, OSError):  # the node or its agent is gone
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)
    return True
