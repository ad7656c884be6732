"""What the cloud test beds' end-to-end modules share: tasks, one-line errors, status, a killed launch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from skyk.testing import ProvisioningContract


def write_task(tmp_path: Path, text: str) -> str:
    """Write a task YAML into ``tmp_path``; return its path."""
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return str(path)


def one_clear_line(result) -> str:
    """Assert the CLI failed with exactly one ``skyk: error:`` line and no traceback; return it."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr.lower()
    errors = [line for line in result.stderr.splitlines() if line.startswith("skyk: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def cluster_status(run: Callable, name: str, refresh: bool = True) -> dict | None:
    """Cluster ``name`` as ``status [-r] -o json`` shows it (None if not listed)."""
    result = run("status", *(["-r"] if refresh else []), "-o", "json")
    assert result.returncode == 0, result.stderr
    return next((c for c in json.loads(result.stdout) if c["name"] == name), None)


def kill_launch_waiting_for_ssh(twins, env: dict[str, str], task: str, cluster: str) -> None:
    """Launch ``task`` as ``cluster`` and SIGKILL the CLI once it waits for SSH.

    The nodes boot but their sshd is gone at once, as on a VM still booting,
    so the launch surely waits, with its nodes made and recorded.
    """
    boot = twins.create

    def boot_without_sshd(name, user_data):
        twin = boot(name, user_data)
        for pid in twin.pids():
            os.kill(pid, signal.SIGKILL)
        return twin

    twins.create = boot_without_sshd
    launch = subprocess.Popen([sys.executable, "-m", "skyk", "launch", "-c", cluster, task, "-y"],
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        for line in launch.stderr:
            if "waiting for SSH" in line:
                break
        launch.send_signal(signal.SIGKILL)
        launch.wait(30)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()


def shown_in_init_then_downed(run: Callable, name: str, note: str) -> None:
    """Assert ``status -r`` shows cluster ``name`` as INIT with ``note``, then ``down`` it."""
    shown = cluster_status(run, name)
    assert shown["status"] == "INIT" and note in shown["note"], shown
    down = run("down", name, "-y")
    assert down.returncode == 0, down.stderr


@contextlib.contextmanager
def twin_bed(tmp_path: Path, make_fake: Callable, **host_options) -> Iterator:
    """A fake cloud made by ``make_fake(twins)`` whose VMs are node twins of a host of its own.

    ``host_options`` go to the ``TwinHost`` (its bridge and subnet). On leaving,
    checks the fake had no error of its own.
    """
    from fakecloud.twins import TwinHost, require_twin_tools

    require_twin_tools()
    with TwinHost(tmp_path / "twins", **host_options) as twins, make_fake(twins) as fake:
        yield fake
        assert not fake.errors, fake.errors


def cli_on_bed(skyk: Callable, env: dict[str, str]) -> Iterator[Callable]:
    """For a fixture to yield from: the CLI with ``env`` added; ``down -a`` afterwards."""

    base = env

    def run(*args: str, env: dict | None = None, timeout: float = 180):
        return skyk(*args, env={**base, **(env or {})}, timeout=timeout)

    yield run
    run("down", "-a", "-y", "--purge")


def launch_pair(run: Callable, tmp_path: Path, twins, resources: str) -> tuple[object, list[int]]:
    """Launch cluster ``pair``: two nodes, a workdir, a setup and a run that say where they are.

    ``resources`` is the task's resources block (indented lines). Returns the
    launch's result and the network namespaces of the twins, which run node processes.
    """
    from skyk.builtin.local_network import namespace_inode
    from skyk.builtin.local_sandbox import find_processes

    workdir = tmp_path / "code"
    workdir.mkdir()
    (workdir / "train.py").write_text("print('synced')\n")
    task = write_task(tmp_path, f"""\
name: pair
num_nodes: 2
workdir: {workdir}
resources:
{resources}
setup: echo "setup on $SKYK_NODE_RANK as $(whoami)"
run: echo "rank=$SKYK_NODE_RANK ip=$SKYK_NODE_IP of $(echo $SKYK_NODE_IPS | tr ' ' ,) $(python3 train.py)"
""")
    launched = run("launch", "-c", "pair", task, "-y")
    assert launched.returncode == 0, launched.stderr
    namespaces = [namespace_inode(t.netns) for t in twins.twins()]
    assert len(namespaces) == 2 and find_processes([], namespaces), "no node processes found"
    return launched, namespaces


def assert_pair_ran(run: Callable, launched, private: list[str], user: str) -> None:
    """Cluster ``pair`` ran its setup as ``user`` and its run on both nodes; exec and logs work."""
    ips = ",".join(private)
    assert f"(head, rank=0) rank=0 ip={private[0]} of {ips} synced" in launched.stdout
    assert f"(worker1, rank=1) rank=1 ip={private[1]} of {ips} synced" in launched.stdout
    assert f"(worker1, rank=1) setup on 1 as {user}" in launched.stdout
    ran = run("exec", "pair", "echo exec on $SKYK_NODE_RANK")
    assert ran.returncode == 0, ran.stderr
    assert "(worker1, rank=1) exec on 1" in ran.stdout
    logs = run("logs", "pair", "1", "--no-follow")
    assert logs.returncode == 0 and f"setup on 0 as {user}" in logs.stdout


def assert_pair_runs_again(run: Callable) -> None:
    """Cluster ``pair``, started again, runs a command on both nodes."""
    again = run("exec", "pair", "echo back on $SKYK_NODE_RANK")
    assert again.returncode == 0, again.stderr
    assert "(worker1, rank=1) back on 1" in again.stdout


class BedContract(ProvisioningContract):
    """The contract kit's provisioning tests on a test bed: the module's ``bed`` fixture's
    environment (and the real catalogs) point the plugin at it. Subclasses set
    ``cloud_name`` and the ``offering`` fixture."""

    @pytest.fixture
    def cloud_env(self, bed, monkeypatch, shared_catalogs):
        for key, value in {**bed.env(), "SKYK_CATALOG_DIR": str(shared_catalogs)}.items():
            monkeypatch.setenv(key, value)
        yield bed
