"""Submitting a task to a cluster's agent and following its output."""

from __future__ import annotations

import sys

from skyk.errors import SkykError
from skyk.lifecycle.progress import say
from skyk.spec.task import Task

#: terminal job states
DONE = ("SUCCEEDED", "FAILED", "FAILED_SETUP", "CANCELLED")


class JobFailed(SkykError):
    """The job ran and did not succeed."""

    exit_code = 1


def job_spec(task: Task, with_setup: bool, gpus: float | None = None, task_id: str | None = None) -> dict:
    """Return what the agent's ``submit`` reads (secrets travel on stdin, never argv).

    ``gpus`` is the accelerators per node the job asks for (None: the whole node);
    ``task_id`` the job's ``SKYK_TASK_ID`` (None: the agent names it after the cluster and job).
    """
    return {"name": task.name, "setup": task.setup if with_setup else None, "run": task.run,
            "envs": dict(task.envs), "secrets": dict(task.secrets), "gpus": gpus, "task_id": task_id}


def follow(client, cluster: str, job_id: int, tail: int | None = None) -> int:
    """Stream a job's log until it ends; return 0, or raise ``JobFailed`` with its exit code.

    Ctrl-C detaches from the log; the job keeps running.
    """
    proc = client.logs(job_id, follow=True, tail=tail)
    out = sys.stdout.buffer
    try:
        while chunk := proc.stdout.read1(65536):
            out.write(chunk)
            out.flush()
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        say(f"\nDetached from job {job_id}; it keeps running."
            f" Reattach with: skyk logs {cluster} {job_id}")
        return 0
    return report(client.job(job_id), cluster)


def report(job: dict, cluster: str) -> int:
    """Print a finished job's status line; raise ``JobFailed`` unless it succeeded."""
    status, job_id = job["status"], job["id"]
    if status == "SUCCEEDED":
        say(f"✓ Job {job_id} SUCCEEDED on cluster {cluster}")
        return 0
    if status not in DONE:
        say(f"Job {job_id} is {status}; follow it with: skyk logs {cluster} {job_id}")
        return 0
    code = job.get("exit_code")
    raise JobFailed(f"job {job_id} on cluster {cluster} {status}"
                    + (f" (exit code {code})" if code is not None else ""),
                    hint=f"see its output with 'skyk logs {cluster} {job_id}'")
