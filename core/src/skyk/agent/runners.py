"""How skyk runs a command on a node: locally in a sandbox, or over SSH.

A runner turns a shell command into a local process whose stdin, stdout and
stderr are the command's. The CLI uses runners to reach a cluster's head
node, and the head node's agent uses them to fan a job out to the workers,
so runners must be describable as JSON (:meth:`CommandRunner.spec`) and
rebuilt from it (:func:`runner_from_spec`).

Standard library only: this module is shipped to nodes with the agent.
"""

from __future__ import annotations

import abc
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, ClassVar

#: environment variables a local sandbox inherits from the user's shell; the
#: rest (cloud credentials, SKYK_HOME, ...) stay outside the node.
_INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "USER", "LOGNAME", "SHELL",
                  "TMPDIR")

#: environment variable that marks every process of a local node, so
#: teardown can find processes that escaped their process group.
NODE_MARKER = "SKYK_NODE_ID"


def remote_path(path: str) -> str:
    """Quote ``path`` for a node's shell, keeping a leading ``~/`` relative to $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


class CommandRunner(abc.ABC):
    """Runs shell commands on one node, in its home directory, with ``bash``."""

    kind: ClassVar[str]

    def __init__(self, python: str = "python3"):
        #: the interpreter that runs the agent on the node
        self.python = python

    @abc.abstractmethod
    def argv(self, command: str) -> list[str]:
        """Return the local argv that runs ``command`` on the node."""

    def process_env(self) -> dict[str, str] | None:
        """Return the environment of the local process (None: inherit this one)."""
        return None

    def process_cwd(self) -> str | None:
        """Return the working directory of the local process (None: inherit)."""
        return None

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """Return a JSON-able description that :func:`runner_from_spec` rebuilds."""

    def popen(self, command: str, **kwargs: Any) -> subprocess.Popen:
        """Start ``command`` on the node; ``kwargs`` go to :class:`subprocess.Popen`."""
        return subprocess.Popen(self.argv(command), env=self.process_env(), cwd=self.process_cwd(),
                                **kwargs)

    def run(self, command: str, *, input: str | bytes | None = None, timeout: float | None = None,
            text: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` on the node to completion and capture its output."""
        return subprocess.run(self.argv(command), env=self.process_env(), cwd=self.process_cwd(),
                              input=input, capture_output=True, timeout=timeout, text=text)

    def put(self, local: str | os.PathLike, remote: str) -> None:
        """Copy a local file, or a directory's contents, to ``remote`` on the node.

        ``remote`` is absolute or relative to the node's home (``~/...``).
        Data travels as a tar stream on stdin, so it works the same through
        any runner.
        """
        source = Path(local).expanduser()
        buffer = tempfile.TemporaryFile()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            if source.is_dir():
                for child in sorted(source.iterdir()):
                    tar.add(child, arcname=child.name)
                target = remote_path(remote)
            else:
                tar.add(source, arcname=source.name)
                target = None
        buffer.seek(0)
        if target is not None:
            command = f"mkdir -p {target} && tar -xf - -C {target}"
        else:
            # A file: unpack beside the destination, then rename into place.
            dest = remote_path(remote)
            command = (f'd=$(dirname {dest}) && mkdir -p "$d" && t=$(mktemp -d "$d/.skyk-put.XXXXXX")'
                       f' && tar -xf - -C "$t" && mv -f "$t"/{shlex.quote(source.name)} {dest}'
                       f' && rmdir "$t"')
        result = subprocess.run(self.argv(command), env=self.process_env(), cwd=self.process_cwd(),
                                stdin=buffer, capture_output=True, text=True)
        buffer.close()
        if result.returncode != 0:
            raise RunnerError(f"copying {source} to {remote} failed: "
                              f"{(result.stderr or result.stdout).strip() or result.returncode}")

    def close(self) -> None:
        """Release any connection this runner keeps open."""
        return None  # most runners hold nothing between commands

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec()}>"


class RunnerError(Exception):
    """A node could not be reached or a copy to it failed."""


class LocalRunner(CommandRunner):
    """A sandbox on this machine: its own home directory and, optionally, network namespace.

    Without ``home`` it is this machine's own user in its own home: how the
    agent on a VM's head node runs the head's share of a job, with no SSH hop.
    """

    kind = "local"

    def __init__(self, home: str | None = None, marker: str | None = None, netns: str | None = None,
                 python: str | None = None):
        super().__init__(python or sys.executable)
        self.home = home
        self.marker = marker
        self.netns = netns

    def argv(self, command: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, "bash", "-c", command]

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _INHERITED_ENV}
        env.setdefault("PATH", os.defpath)
        env["HOME"] = self.process_cwd()
        if self.marker:
            env[NODE_MARKER] = self.marker
        return env

    def process_cwd(self) -> str:
        return self.home or os.path.expanduser("~")

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "home": self.home, "marker": self.marker, "netns": self.netns,
                "python": self.python}


def _control_dir() -> str:
    # Unix socket paths are limited to ~100 bytes, so not under SKYK_HOME.
    path = os.path.join(tempfile.gettempdir(), f"skyk-ssh-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class SSHRunner(CommandRunner):
    """A node reached with the OpenSSH client, reusing one connection per host."""

    kind = "ssh"

    def __init__(self, host: str, user: str, key_file: str | None = None, port: int = 22,
                 python: str = "python3", options: tuple[str, ...] | list[str] = ()):
        super().__init__(python)
        self.host = host
        self.user = user
        self.key_file = key_file
        self.port = int(port)
        self.options = tuple(options)

    def ssh_args(self) -> list[str]:
        """Return the ``ssh`` arguments up to and including the destination."""
        args = ["ssh", "-T", "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={_control_dir()}/%C",
                "-o", "ControlPersist=120"]
        if self.key_file:
            args += ["-i", os.path.expanduser(self.key_file), "-o", "IdentitiesOnly=yes"]
        for option in self.options:
            args += ["-o", option]
        return [*args, f"{self.user}@{self.host}"]

    def argv(self, command: str) -> list[str]:
        return [*self.ssh_args(), f"cd ~ && exec bash -c {shlex.quote(command)}"]

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "host": self.host, "user": self.user, "key_file": self.key_file,
                "port": self.port, "python": self.python, "options": list(self.options)}

    def close(self) -> None:
        args = self.ssh_args()
        subprocess.run([*args[:-1], "-O", "exit", args[-1]], capture_output=True, timeout=10)


def wait_until_answers(runner: CommandRunner, deadline: float) -> str | None:
    """Run ``true`` through ``runner`` until it succeeds or ``time.monotonic()`` passes ``deadline``.

    Returns None once the node answered, else what the last try said. A
    booting node refuses connections at once, so it is probed again soon,
    then less often.
    """
    import time

    pause, last = 0.1, "no answer"
    while (left := deadline - time.monotonic()) > 0:
        try:
            result = runner.run("true", timeout=max(1.0, min(left, 30.0)))
        except subprocess.TimeoutExpired:
            last = "connection timed out"
        except OSError as exc:
            last = str(exc)
        else:
            if result.returncode == 0:
                return None
            lines = (result.stderr or "").strip().splitlines()
            last = lines[-1] if lines else f"exited with {result.returncode}"
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 2.0)
    return last


_KINDS: dict[str, type[CommandRunner]] = {LocalRunner.kind: LocalRunner, SSHRunner.kind: SSHRunner}


def runner_from_spec(spec: dict[str, Any]) -> CommandRunner:
    """Rebuild a runner from :meth:`CommandRunner.spec`."""
    fields = dict(spec)
    kind = fields.pop("kind")
    if kind not in _KINDS:
        raise RunnerError(f"unknown runner kind {kind!r}")
    if "options" in fields:
        fields["options"] = tuple(fields["options"])
    return _KINDS[kind](**fields)

