"""The CLI's side of the agent: each method is one command run on the head node.

Every call is a single runner invocation (one ssh round trip on a real
cluster), because the CLI makes these calls on its hot path. Standard
library only, like the rest of the package.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from . import layout
from .runners import CommandRunner, RunnerError

#: the agent's exit code for an unknown job id
_EXIT_UNKNOWN_JOB = 3
#: exit codes meaning "the agent is not there": ssh could not connect, or no such interpreter
_UNREACHABLE = (255, 126, 127)
#: seconds a ``mount`` may take: COPY downloads whole buckets
MOUNT_CALL_TIMEOUT = 6 * 3600.0
#: seconds an ``unmount`` may take: the agent's flush time-out (300 s) and the unmounts
UNMOUNT_CALL_TIMEOUT = 420.0


class AgentError(Exception):
    """An agent command failed; the message is the agent's own (its last stderr line)."""


class UnknownJobError(AgentError):
    """The cluster has no job with that id."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


class AgentClient:
    """Drives the agent on a cluster's head node through ``runner``."""

    def __init__(self, runner: CommandRunner, timeout: float = 300.0):
        self.runner = runner
        #: the longest any one command may take (``logs`` excepted)
        self.timeout = timeout

    def _command(self, args: str) -> str:
        return layout.agent_command(self.runner.python, args)

    def _call(self, args: str, input: str | None = None, timeout: float | None = None) -> dict:
        try:
            result = self.runner.run(self._command(args), input=input,
                                     timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise AgentError(f"the agent did not answer '{args.split()[0]}' within "
                             f"{timeout or self.timeout:g} s") from None
        except OSError as exc:
            raise AgentError(f"cannot reach the head node: {exc}") from None
        if result.returncode == _EXIT_UNKNOWN_JOB:
            raise UnknownJobError(_last_line(result.stderr) or "no such job on this cluster")
        if result.returncode != 0:
            message = _last_line(result.stderr) or _last_line(result.stdout)
            raise AgentError(message or f"agent command '{args}' exited with {result.returncode}")
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise AgentError(f"the agent answered '{args}' with something that is not JSON: "
                             f"{_last_line(result.stdout)[:200]!r}") from None

    def install(self) -> None:
        """Copy this package (without bytecode) to ``~/.skyk/agent/skyk_agent`` on the head."""
        package = Path(__file__).resolve().parent
        with tempfile.TemporaryDirectory(prefix="skyk-agent-") as tmp:
            staged = Path(tmp) / layout.NODE_PACKAGE
            shutil.copytree(package, staged, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            try:
                self.runner.put(staged, f"~/.skyk/agent/{layout.NODE_PACKAGE}")
            except RunnerError as exc:
                raise AgentError(f"installing the agent: {exc}") from None

    def write_cluster_info(self, info: dict) -> None:
        """Write ``~/.skyk/cluster.json`` on the head (atomically)."""
        command = ('umask 077 && mkdir -p "$HOME/.skyk" && t=$(mktemp "$HOME/.skyk/.cluster.json.XXXXXX")'
                   ' && cat > "$t" && mv -f "$t" "$HOME/.skyk/cluster.json"')
        try:
            result = self.runner.run(command, input=json.dumps(info), timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentError(f"writing cluster.json: {exc}") from None
        if result.returncode != 0:
            raise AgentError(f"writing cluster.json: {_last_line(result.stderr) or result.returncode}")

    def start(self) -> dict:
        """Start the daemon unless it runs; return ``{"pid", "started"}``."""
        return self._call("start")

    def submit(self, spec: dict) -> int:
        """Queue a job (``name, setup, run, envs, secrets``); return its id.

        The spec travels on stdin, so secrets never appear on a command line.
        """
        return int(self._call("submit", input=json.dumps(spec))["job_id"])

    def queue(self) -> list[dict]:
        """Return the cluster's jobs, newest first."""
        return self._call("queue")["jobs"]

    def job(self, job_id: int) -> dict:
        """Return one job; raise :class:`UnknownJobError` if there is none."""
        return self._call(f"job {int(job_id)}")["job"]

    def job_progress(self, job_id: int, log_from: int, timeout: float | None = None) -> tuple[dict, bytes, bool]:
        """Return one job, its log's bytes from ``log_from`` on (at most 1 MiB) and whether the
        agent's daemon runs, in one call."""
        answer = self._call(f"job {int(job_id)} --log-from {int(log_from)}", timeout=timeout)
        try:
            return answer["job"], base64.b64decode(answer["log"], validate=True), bool(answer["daemon"])
        except (KeyError, TypeError, ValueError):
            raise AgentError(f"the agent's answer to 'job {int(job_id)}' has no readable log") from None

    def logs(self, job_id: int, follow: bool = False, tail: int | None = None) -> subprocess.Popen:
        """Start printing a job's log; read the raw bytes from the process's stdout.

        stderr is a pipe too: after the process ends, exit code 3 with its
        stderr means an unknown job.
        """
        args = f"logs {int(job_id)}" + (" --follow" if follow else "")
        if tail is not None:
            args += f" --tail {int(tail)}"
        return self.runner.popen(self._command(args), stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def cancel(self, job_ids: list[int] | None) -> list[int]:
        """Cancel jobs (None: every unfinished one); return those that were cancelled."""
        args = "cancel --all" if job_ids is None else "cancel " + " ".join(str(int(i)) for i in job_ids)
        if job_ids is not None and not job_ids:
            return []
        return [int(i) for i in self._call(args)["cancelled"]]

    def autostop(self, idle_minutes: float | None, down: bool = False) -> dict:
        """Stop (``down``: tear down) the cluster after ``idle_minutes`` idle; None cancels."""
        if idle_minutes is None:
            return self._call("autostop --cancel")["autostop"]
        args = f"autostop --idle-minutes {float(idle_minutes)!r}" + (" --down" if down else "")
        return self._call(args)["autostop"]

    def wait_nodes(self, specs: list[dict], timeout: float) -> dict[int, str]:
        """Have the head probe the nodes of ``specs`` until each answers; return those that did not.

        The result maps a node's index in ``specs`` to what its last try said.
        """
        answer = self._call(f"wait-nodes --timeout {float(timeout)!r}", input=json.dumps(specs),
                            timeout=timeout + 60)
        return {int(i): reason for i, reason in answer["unanswered"].items()}

    def health(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Return the agent's health, or None if the head cannot be reached or has no agent."""
        try:
            result = self.runner.run(self._command("health"), timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode in _UNREACHABLE or (
                result.returncode != 0 and f"No module named {layout.NODE_PACKAGE}" in result.stderr):
            return None
        if result.returncode != 0:
            raise AgentError(_last_line(result.stderr) or f"agent health exited with {result.returncode}")
        try:
            return json.loads(result.stdout)
        except ValueError:
            return None

    def mount(self, spec: dict, timeout: float = MOUNT_CALL_TIMEOUT) -> dict:
        """Mount and copy buckets on this runner's node; return ``{"mounted": [...], "copied": [...]}``.

        ``spec`` is ``{"remotes": {NAME: NodeAccess.as_json()}, "mounts": [{"dest",
        "remote", "path", "mode"}]}`` (see :mod:`skyk.agent.mounts`). It travels
        on stdin: it holds the stores' secrets. Works on any node of a
        cluster once :meth:`install` has put the agent there; running the same
        spec again leaves what is mounted as it is.
        """
        return self._call("mount", input=json.dumps(spec), timeout=timeout)

    def unmount(self, timeout: float = UNMOUNT_CALL_TIMEOUT) -> dict:
        """Upload what was written to this node's bucket mounts, then unmount them.

        Returns ``{"unmounted": [...], "errors": [...]}``; raises
        :class:`AgentError` when writes were still not uploaded after the
        agent's flush time-out (those mounts are left mounted).
        """
        return self._call("unmount", timeout=timeout)

    def shutdown(self) -> None:
        """Cancel every job, stop their processes on every node, and stop the daemon."""
        self._call("shutdown")
