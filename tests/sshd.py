"""A real OpenSSH server on loopback, so SSH runners are tested against real ``ssh``.

Import the fixtures into a test module that needs them::

    from sshd import ssh_runner, sshd  # noqa: F401 - pytest fixtures

``sshd`` starts ``/usr/sbin/sshd`` on 127.0.0.1 at a free port with a fresh
host key, accepting a fresh client key for the current user, and gives the
logged-in user a ``$HOME`` in the test's temporary directory (``SetEnv``), so
nothing lands in the real home. Without sshd installed the tests are skipped,
except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakecloud.tools import missing_tool
from skyk.agent.runners import SSHRunner

SSHD = "/usr/sbin/sshd"
#: How long sshd may take to accept connections.
START_SECONDS = 10.0

CONFIG = """\
ListenAddress 127.0.0.1
Port {port}
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
SetEnv HOME={home}
LogLevel ERROR
"""


@dataclass
class SSHServer:
    """A running sshd and how to log in to it."""

    port: int
    user: str
    key_file: Path
    #: the logged-in user's $HOME
    home: Path
    process: subprocess.Popen

    def runner(self) -> SSHRunner:
        """Return a runner for this server; the caller closes it."""
        return SSHRunner(host="127.0.0.1", user=self.user, key_file=str(self.key_file),
                         port=self.port, python=sys.executable)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "skyk-test", "-f", str(path)],
                   check=True, capture_output=True)


def start_sshd(directory: Path) -> SSHServer:
    """Start sshd with its keys and config in ``directory``; raise RuntimeError if it will not run."""
    user = pwd.getpwuid(os.getuid()).pw_name
    home = directory / "home"
    home.mkdir(parents=True)
    _keygen(directory / "host_key")
    _keygen(directory / "client_key")
    shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
    if os.geteuid() == 0:
        # sshd refuses to start as root without its privilege separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = directory / "sshd.log"
    # The free port may be taken before sshd binds it: try a few.
    for _ in range(3):
        port = _free_port()
        config = directory / "sshd_config"
        config.write_text(CONFIG.format(port=port, dir=directory, user=user, home=home))
        with open(log, "w") as err:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + START_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if _accepts(port):
                return SSHServer(port, user, directory / "client_key", home, process)
            time.sleep(0.02)
        stop_sshd(process)
    raise RuntimeError(f"sshd did not start: {log.read_text().strip()}")


def stop_sshd(process: subprocess.Popen) -> None:
    """Stop sshd (its sessions' processes die with their connections)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def sshd(tmp_path_factory) -> Iterator[SSHServer]:
    """A running sshd on 127.0.0.1 for the current user; stopped after the test."""
    if not os.access(SSHD, os.X_OK):
        missing_tool(f"{SSHD} not installed (apt-get install openssh-server)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop_sshd(server.process)


@pytest.fixture
def ssh_runner(sshd: SSHServer) -> Iterator[SSHRunner]:
    """An :class:`SSHRunner` logged in to :func:`sshd`; its master connection is closed after."""
    runner = sshd.runner()
    try:
        yield runner
    finally:
        runner.close()
