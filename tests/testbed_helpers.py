"""What the clouds' end-to-end tests on the test bed (test_aws_testbed, test_gcp_testbed,
test_azure_testbed, test_across_clouds) share."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
from skyk.testing import ProvisioningContract


def one_clear_line(result: subprocess.CompletedProcess) -> str:
    """The one ``skyk: error:`` line of a failed CLI run (and no traceback); fails otherwise."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr.lower()
    errors = [line for line in result.stderr.splitlines() if line.startswith("skyk: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def cluster_status(run, name: str, refresh: bool = True) -> dict | None:
    """Cluster ``name`` as ``status [-r] -o json`` shows it through ``run`` (None if not listed)."""
    result = run("status", *(["-r"] if refresh else []), "-o", "json")
    assert result.returncode == 0, result.stderr
    return next((c for c in json.loads(result.stdout) if c["name"] == name), None)


def kill_launch_waiting_for_ssh(bed, catalogs, cluster: str, task: str) -> None:
    """Launch ``task`` as ``cluster`` on ``bed`` (and ``catalogs``); SIGKILL the CLI once it
    waits for SSH.

    The nodes boot but lose their sshd at once, as VMs still booting, so the
    launch surely waits for SSH with its instances made and recorded.
    """
    twins = bed.twins
    boot = twins.create

    def boot_without_sshd(name, user_data):
        twin = boot(name, user_data)
        for pid in twin.pids():
            os.kill(pid, signal.SIGKILL)
        return twin

    twins.create = boot_without_sshd
    launch = subprocess.Popen([sys.executable, "-m", "skyk", "launch", "-c", cluster, task, "-y"],
                              env={**os.environ, **bed.env(), "SKYK_CATALOG_DIR": str(catalogs)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        for line in launch.stderr:
            if "waiting for SSH" in line:
                break
        launch.send_signal(signal.SIGKILL)
        launch.wait(30)
    finally:
        twins.create = boot
        if launch.poll() is None:
            launch.kill()
            launch.wait()


@contextlib.contextmanager
def bed_with_twins(make_fake, tmp_path, **twin_host: object):
    """A fake cloud (``make_fake(twins)``) whose instances are node twins of a ``TwinHost``
    under ``tmp_path`` (``twin_host``: its bridge and subnet); checks the fake had no errors."""
    from fakecloud.twins import TwinHost, require_twin_tools

    require_twin_tools()
    with TwinHost(tmp_path / "twins", **twin_host) as twins, make_fake(twins) as fake:
        yield fake
        assert not fake.errors, fake.errors


def assert_no_twins_left(bed) -> None:
    """No node twin of ``bed`` lives, and none left its directory."""
    assert bed.twins.twins() == [], "node twins left"
    assert not [p for p in bed.twins.root.iterdir() if p.is_dir()], "twin directories left"


def cli_on_bed(skyk, bed):
    """Yield a runner of the CLI pointed at ``bed`` (by its ``env()``); ``down -a`` afterwards."""

    def run(*args: str, env: dict | None = None, timeout: float = 180):
        return skyk(*args, env={**bed.env(), **(env or {})}, timeout=timeout)

    yield run
    run("down", "-a", "-y", "--purge")


def point_at(bed, monkeypatch, catalogs) -> None:
    """Point this process's plugins at ``bed`` and ``catalogs``, as a user would (variables)."""
    for key, value in {**bed.env(), "SKYK_CATALOG_DIR": str(catalogs)}.items():
        monkeypatch.setenv(key, value)


class BedContract(ProvisioningContract):
    """The contract kit's provisioning tests on a test bed: the module's ``bed`` fixture (and
    the real catalogs) point the plugin at the fake. Subclasses set ``cloud_name`` and the
    ``offering`` fixture."""

    @pytest.fixture
    def cloud_env(self, bed, monkeypatch, shared_catalogs):
        point_at(bed, monkeypatch, shared_catalogs)
        yield bed


def task_file(tmp_path, text: str) -> str:
    """Write a task file under ``tmp_path``; return its path."""
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return str(path)


def two_node_task(tmp_path, infra: str, resources: str = "") -> str:
    """A two-node task with a workdir, a setup naming its node and user, and a run printing
    each node's rank, address, the cluster's addresses and a line from the synced workdir."""
    workdir = tmp_path / "code"
    workdir.mkdir()
    (workdir / "train.py").write_text("print('synced')\n")
    return task_file(tmp_path, f"""\
name: pair
num_nodes: 2
workdir: {workdir}
resources:
  infra: {infra}
  cpus: 2+
{resources}setup: echo "setup on $SKYK_NODE_RANK as $(whoami)"
run: echo "rank=$SKYK_NODE_RANK ip=$SKYK_NODE_IP of $(echo $SKYK_NODE_IPS | tr ' ' ,) $(python3 train.py)"
""")


def assert_both_nodes_ran(output: str, private: list[str], user: str) -> None:
    """``two_node_task``'s setup and run printed what they should on both nodes."""
    ips = ",".join(private)
    assert f"(head, rank=0) rank=0 ip={private[0]} of {ips} synced" in output
    assert f"(worker1, rank=1) rank=1 ip={private[1]} of {ips} synced" in output
    assert f"(worker1, rank=1) setup on 1 as {user}" in output


def one_node_task(tmp_path, infra: str, resources: str = "") -> str:
    """A one-node task on ``infra`` whose run prints the zone it landed in (``landed in ZONE``)."""
    return task_file(tmp_path, f"""\
resources:
  infra: {infra}
  cpus: 2+
{resources}run: echo landed in $(echo $SKYK_CLUSTER_INFO | python3 -c 'import json,sys; print(json.load(sys.stdin)["zone"])')
""")


def exec_on_both(run, cluster: str, word: str) -> None:
    """``exec`` on ``cluster`` of two nodes, which must both answer (``word`` in the echo)."""
    ran = run("exec", cluster, f"echo {word} on $SKYK_NODE_RANK")
    assert ran.returncode == 0, ran.stderr
    assert f"(worker1, rank=1) {word} on 1" in ran.stdout


def shown_unsettled_then_down(run, cluster: str, note: str) -> None:
    """``status -r`` shows ``cluster`` INIT with ``note`` in its note; ``down`` then succeeds."""
    shown = cluster_status(run, cluster)
    assert shown["status"] == "INIT" and note in shown["note"], shown
    down = run("down", cluster, "-y")
    assert down.returncode == 0, down.stderr


def stop_cluster(run, cluster: str) -> None:
    """``stop`` ``cluster``, which then shows STOPPED (the only cluster listed)."""
    from lifecycle_helpers import status_json

    stopped = run("stop", cluster, "-y")
    assert stopped.returncode == 0, stopped.stderr
    assert [c["status"] for c in status_json(run)] == ["STOPPED"]


def start_cluster(run, cluster: str) -> str:
    """``start`` ``cluster``; return its head's address afterwards (``status --ip``)."""
    started = run("start", cluster)
    assert started.returncode == 0, started.stderr
    return run("status", "--ip", cluster).stdout.strip()


def launch_on_twins(run, bed, cluster: str, task: str, nodes: int):
    """Launch ``task`` as ``cluster``; check ``nodes`` twins run node processes.

    Returns the launch's result and the twins' network namespaces (inodes), to
    check later that no process is left in them.
    """
    from skyk.builtin.local_network import namespace_inode
    from skyk.builtin.local_sandbox import find_processes

    launched = run("launch", "-c", cluster, task, "-y")
    assert launched.returncode == 0, launched.stderr
    namespaces = [namespace_inode(t.netns) for t in bed.twins.twins()]
    assert len(namespaces) == nodes and find_processes([], namespaces), "no node processes found"
    return launched, namespaces
