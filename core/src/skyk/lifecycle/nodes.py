"""Getting provisioned nodes ready: the agent, the cluster description, files."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skyk.agent.layout import WORKDIR_NAME
from skyk.agent.runners import RunnerError, runner_from_spec
from skyk.errors import SkykError
from skyk.provision.cloud import Cloud
from skyk.provision.ssh_cloud import HEAD_KEY, give_head_the_key
from skyk.provision.types import ClusterHandle
from skyk.spec.task import Task

#: Where the task's workdir lands on every node.
WORKDIR = f"~/{WORKDIR_NAME}"


def cluster_info(handle: ClusterHandle, cloud: Cloud) -> dict:
    """Return the ``cluster.json`` the head node's agent reads."""
    return {
        "cluster": handle.cluster, "cloud": handle.cloud, "region": handle.region,
        "zone": handle.zone, "instance_type": handle.instance_type, "num_nodes": len(handle.nodes),
        "num_gpus_per_node": int(handle.accelerator_count or 0),
        "node_ips": [n.internal_ip for n in handle.nodes],
        "runners": [n.internal_runner or n.runner for n in handle.nodes],
        "autostop": {"stop": cloud.autostop_command(handle, down=False),
                     "down": cloud.autostop_command(handle, down=True)},
    }


def start_agent(handle: ClusterHandle, cloud: Cloud):
    """Install and start the agent on the head node; return its client."""
    from skyk.lifecycle.lookup import head_client

    client = head_client(handle)
    if any(n.internal_runner and n.internal_runner.get("key_file") == HEAD_KEY for n in handle.nodes[1:]):
        give_head_the_key(handle)
    client.install()
    client.write_cluster_info(cluster_info(handle, cloud))
    client.start()
    return client


def close_connections(handle: ClusterHandle) -> None:
    """Close the connections kept open to the nodes (SSH masters), once the nodes are going.

    A kept connection to a node that is gone would hang the next command to
    whatever node gets its address later.
    """
    for node in handle.nodes:
        try:
            runner_from_spec(node.runner).close()
        except (OSError, RunnerError, subprocess.SubprocessError):
            pass  # nothing was open, or it is dying anyway


def check_mounts(task: Task, cloud: str) -> None:
    """Refuse file mounts this version cannot make on ``cloud``, before anything is provisioned."""
    for dest, src in task.file_mounts.items():
        if not isinstance(src, str) or "://" in src:
            raise SkykError(f"{task.source}: file_mounts.{dest}: bucket mounts are not supported yet",
                            hint="copy the data from a local path, or fetch it in setup")
        if cloud == "local" and not dest.startswith("~"):
            # A local node is a sandbox on this machine; an absolute path would
            # write outside it, into the user's own filesystem.
            raise SkykError(f"{task.source}: file_mounts.{dest}: the local cloud will not write"
                            f" outside its sandbox to this machine's {dest}",
                            hint=f"use a path under the node's home, e.g. ~{dest}")


def sync_files(handle: ClusterHandle, task: Task) -> None:
    """Copy the workdir and local file mounts to every node, in parallel."""
    copies: list[tuple[Path, str]] = []
    if task.workdir:
        copies.append((Path(task.workdir).expanduser(), WORKDIR))
    for dest, src in task.file_mounts.items():
        if isinstance(src, str):
            copies.append((Path(src).expanduser(), dest))
    if not copies:
        return

    def copy(spec_and_item) -> None:
        spec, (src, dest) = spec_and_item
        runner = runner_from_spec(spec)
        try:
            runner.put(src, dest)
        except RunnerError as exc:
            raise SkykError(f"syncing {src} to {dest} on {handle.cluster}: {exc}",
                            hint="check the node is reachable: skyk status -r " + handle.cluster) from None

    work = [(n.runner, item) for n in handle.nodes for item in copies]
    with ThreadPoolExecutor(max_workers=min(16, len(work))) as pool:
        list(pool.map(copy, work))
