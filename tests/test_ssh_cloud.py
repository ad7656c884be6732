"""The remote-node path every SSH cloud shares: the user's key, cloud-init, waiting for SSH."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from skyk.agent.runners import runner_from_spec
from skyk.catalog.offering import Offering
from skyk.provision.ssh_cloud import HEAD_KEY, INTERNAL_KEX, cloud_config, ssh_node, wait_for_ssh
from skyk.provision.ssh_keys import user_key
from skyk.provision.types import ClusterHandle, NodeInfo, ProvisionError
from sshd import _free_port, sshd  # noqa: F401 - pytest fixture

OFFERING = Offering(cloud="test", instance_type="t", vcpus=1, memory_gib=1, region="r", zone=None,
                    price=0.0, spot_price=None, accelerator=None, accelerator_count=0)


def _handle(nodes: list[NodeInfo]) -> ClusterHandle:
    return ClusterHandle(cluster="c", uid="u", cloud="test", region="r", zone=None, instance_type="t",
                         use_spot=False, hourly_price=0.0, accelerator=None, accelerator_count=0,
                         nodes=tuple(nodes))


def test_the_user_key_is_made_once_private_and_ed25519(isolated_home):
    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(lambda _: user_key(), range(4)))
    assert len({(k.private, k.public) for k in keys}) == 1
    key = keys[0]
    assert key.private == isolated_home / ".skyk" / "ssh" / "skyk-key"
    assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.private.parent.stat().st_mode) == 0o700
    assert key.public.startswith("ssh-ed25519 ")
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key.private)], capture_output=True,
                             text=True, check=True).stdout.split()[:2]
    assert derived == key.public.split()[:2]
    assert user_key() == key  # read again, not made again
    assert not [p for p in key.private.parent.iterdir() if p.name.startswith(".skyk-key")]


def test_cloud_config_makes_the_user_with_the_key_and_sudo(isolated_home):
    key = user_key()
    text = cloud_config("ubuntu", key)
    assert text.startswith("#cloud-config\n")
    (user,) = yaml.safe_load(text)["users"]
    assert user["name"] == "ubuntu" and user["ssh_authorized_keys"] == [key.public]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert "PRIVATE" not in text


def test_a_node_is_reached_from_here_on_its_public_address_and_from_the_head_on_its_private_one(
        isolated_home):
    key = user_key()
    node = ssh_node("i-1", "10.0.0.5", "203.0.113.9", "ubuntu", key)
    assert node.ip == "203.0.113.9"
    assert (node.runner["host"], node.runner["key_file"]) == ("203.0.113.9", str(key.private))
    assert (node.internal_runner["host"], node.internal_runner["key_file"]) == ("10.0.0.5", HEAD_KEY)
    # Inside the cluster's network the head prefers X25519, keeping OpenSSH's others as fallbacks.
    assert node.internal_runner["options"] == [INTERNAL_KEX]
    assert INTERNAL_KEX.startswith("KexAlgorithms=^")
    assert runner_from_spec(node.runner).python == "python3"
    assert ssh_node("i-2", "10.0.0.6", None, "ubuntu", key).runner["host"] == "10.0.0.6"
    # The head runs its own share of a job directly, as this machine's user.
    head = runner_from_spec(ssh_node("i-0", "10.0.0.4", "203.0.113.8", "ubuntu", key, head=True)
                            .internal_runner)
    assert (head.kind, head.home, head.marker, head.netns, head.python) == ("local", None, None, None,
                                                                          "python3")
    assert head.run("echo $HOME").stdout.strip() == os.path.expanduser("~")


def test_waiting_for_ssh_returns_once_every_node_answers(sshd, capsys):  # noqa: F811
    runner = sshd.runner()
    node = NodeInfo("n0", "127.0.0.1", None, runner.spec())
    try:
        wait_for_ssh(_handle([node, NodeInfo("n1", "127.0.0.1", None, runner.spec())]), 30)
    finally:
        runner.close()
    assert "waiting for SSH on 2 node(s)" in capsys.readouterr().err


def test_a_node_that_never_answers_ssh_is_named_within_the_limit(sshd):  # noqa: F811
    good = sshd.runner()
    dead = runner_from_spec({**good.spec(), "port": _free_port()})
    handle = _handle([NodeInfo("n0", "127.0.0.1", None, good.spec()),
                      NodeInfo("i-dead", "127.0.0.1", None, dead.spec())])
    started = time.monotonic()
    try:
        with pytest.raises(ProvisionError) as caught:
            wait_for_ssh(handle, 1.5)
    finally:
        good.close()
    assert time.monotonic() - started < 15
    assert caught.value.kind == "timeout"
    assert "node i-dead (worker 1, 127.0.0.1) did not answer SSH within 1.5s" in caught.value.reason
    assert "refused" in caught.value.reason.lower()


def test_the_head_gets_a_private_copy_of_the_key_for_the_workers(sshd, isolated_home):  # noqa: F811
    from skyk.provision.ssh_cloud import give_head_the_key

    runner = sshd.runner()
    try:
        give_head_the_key(_handle([NodeInfo("n0", "127.0.0.1", None, runner.spec())]))
    finally:
        runner.close()
    copy = sshd.home / ".skyk" / "ssh" / "skyk-key"
    assert copy.read_text() == user_key().private.read_text()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert os.stat(sshd.home / ".skyk").st_mode & 0o077 == 0


@pytest.fixture
def head_and_worker(tmp_path, isolated_home):
    """Two real sshd servers that accept the user's key: a head and a worker behind it."""
    from skyk.agent.runners import SSHRunner
    from sshd import SSHD, start_sshd, stop_sshd

    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} not installed")
    servers = [start_sshd(tmp_path / f"node{i}") for i in range(2)]
    try:
        for server in servers:
            with open(server.key_file.parent / "authorized_keys", "a") as keys:
                keys.write(user_key().public + "\n")
        head, worker = servers
        nodes = [NodeInfo("head", "127.0.0.1", None, head.runner().spec()),
                 NodeInfo("i-worker", "127.0.0.1", None, worker.runner().spec(),
                          SSHRunner("127.0.0.1", worker.user, HEAD_KEY, port=worker.port).spec())]
        yield _handle(nodes), worker
    finally:
        for server in servers:
            runner_from_spec(server.runner().spec()).close()
            stop_sshd(server.process)


def test_the_head_checks_its_workers_over_the_internal_network(head_and_worker, capsys):
    from skyk.provision.ssh_cloud import wait_for_workers_from_head

    handle, worker = head_and_worker
    wait_for_workers_from_head(handle, 30)
    assert "waiting for SSH on 1 worker(s) from the head" in capsys.readouterr().err


def test_a_worker_the_head_cannot_reach_is_named(head_and_worker):
    import dataclasses

    from skyk.provision.ssh_cloud import wait_for_workers_from_head

    handle, _ = head_and_worker
    dead = dataclasses.replace(handle.nodes[1], internal_ip="127.0.0.1", internal_runner={
        **handle.nodes[1].internal_runner, "port": _free_port()})
    started = time.monotonic()
    with pytest.raises(ProvisionError) as caught:
        wait_for_workers_from_head(dataclasses.replace(handle, nodes=(handle.nodes[0], dead)), 1.5)
    assert time.monotonic() - started < 30
    assert caught.value.kind == "timeout"
    assert "node i-worker (worker 1, 127.0.0.1) did not answer SSH from the head within 1.5s" \
        in caught.value.reason
