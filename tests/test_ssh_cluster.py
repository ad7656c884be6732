"""A two-node cluster whose nodes are reached only over SSH: two real sshd servers on loopback.

The head's agent fans the job out to the worker through the worker's SSH
runner, and a cancel reaches the worker's processes through ``kill-part``
over SSH, as on a remote cloud.
"""

from __future__ import annotations

import os
import time

import pytest
from fakecloud.tools import missing_tool
from lifecycle_helpers import cmdlines, wait_for
from skyk.agent.client import AgentClient
from sshd import SSHD, start_sshd, stop_sshd

TERMINAL = ("SUCCEEDED", "FAILED", "FAILED_SETUP", "CANCELLED")


@pytest.fixture
def two_nodes(tmp_path):
    if not os.access(SSHD, os.X_OK):
        missing_tool(f"{SSHD} not installed")
    servers = []
    try:
        servers = [start_sshd(tmp_path / f"node{i}") for i in range(2)]
        runners = [s.runner() for s in servers]
        client = AgentClient(runners[0])
        client.install()
        client.write_cluster_info({
            "cluster": "ssh-pair", "cloud": "ssh", "region": "loopback", "zone": None,
            "instance_type": "sshd", "num_nodes": 2, "num_gpus_per_node": 0,
            "node_ips": ["127.0.0.1", "127.0.0.1"], "runners": [r.spec() for r in runners],
            "autostop": {"stop": None, "down": None},
        })
        client.start()
        yield client, servers
        client.shutdown()
        for runner in runners:
            runner.close()
    finally:
        for server in servers:
            stop_sshd(server.process)


def _wait(client, job_id, timeout=60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.job(job_id))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, f"job still {job['status']}"
        time.sleep(0.1)
    return job


def test_a_job_runs_on_both_ssh_nodes_with_their_ranks(two_nodes):
    client, servers = two_nodes
    job_id = client.submit({"name": "pair", "setup": "echo setup on $SKYK_NODE_RANK",
                            "run": "echo rank=$SKYK_NODE_RANK home=$HOME", "envs": {}, "secrets": {}})
    job = _wait(client, job_id)
    out = client.logs(job_id, follow=False).communicate(timeout=30)[0].decode()
    assert job["status"] == "SUCCEEDED", out
    assert f"(head, rank=0) rank=0 home={servers[0].home}" in out
    assert f"(worker1, rank=1) rank=1 home={servers[1].home}" in out
    assert "(worker1, rank=1) setup on 1" in out


def test_cancel_reaches_the_worker_over_ssh(two_nodes):
    client, servers = two_nodes
    job_id = client.submit({"name": "long", "setup": None, "run": "sleep 321", "envs": {}, "secrets": {}})

    def sleepers() -> list[int]:
        return [int(p.name) for p in __import__("pathlib").Path("/proc").iterdir()
                if p.name.isdigit() and cmdlines([p.name]) == ["sleep 321 "]]

    wait_for(lambda: len(sleepers()) == 2, what="the job running on both nodes")
    assert client.cancel([job_id]) == [job_id]
    assert _wait(client, job_id)["status"] == "CANCELLED"
    wait_for(lambda: not sleepers(), timeout=10, what="both nodes' processes to be killed")
