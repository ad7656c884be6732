"""Getting provisioned nodes ready: the agent, the cluster description, files."""

from __future__ import annotations

import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skyk.agent.layout import WORKDIR_NAME
from skyk.agent.runners import RunnerError, remote_path, runner_from_spec
from skyk.errors import SkykError
from skyk.provision.cloud import Cloud
from skyk.provision.ssh_cloud import HEAD_KEY, give_head_the_key
from skyk.provision.types import ClusterHandle
from skyk.spec.storage import is_url
from skyk.spec.task import Task
from skyk.spec.workdir import GitWorkdir

#: Where the task's workdir lands on every node.
WORKDIR = f"~/{WORKDIR_NAME}"
#: Seconds one node may take to clone a git workdir.
CLONE_TIMEOUT = 900


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


def node_path(dest: str) -> str:
    """Where a file mount destination is on a node: a relative one is in the workdir, as in SkyPilot."""
    return dest if dest.startswith(("/", "~")) else f"{WORKDIR}/{dest}"


def check_mounts(task: Task, cloud: str) -> None:
    """Refuse file mounts and volumes this version cannot make on ``cloud``, before anything is provisioned."""
    alternatives = [task.resources, *(task.resources.any_of or task.resources.ordered or [])]
    named = [field for field, used in (("volumes", task.volumes), ("volume_mounts", task.volume_mounts),
                                       ("resources.volumes", any(r.volumes for r in alternatives)))
             if used]
    if named:
        raise SkykError(f"{task.source}: {named[0]}: volumes are not supported yet",
                        hint="copy the data with file_mounts, or fetch it in setup; 'skyk launch --dryrun'"
                             " still plans the task")
    for dest in task.file_mounts:
        if cloud == "local" and (not node_path(dest).startswith("~") or ".." in dest.split("/")):
            # A local node is a sandbox on this machine; an absolute path would
            # write outside it, into the user's own filesystem.
            raise SkykError(f"{task.source}: file_mounts.{dest}: the local cloud will not write"
                            f" outside its sandbox to this machine's {dest}",
                            hint=f"use a path under the node's home, e.g. ~{dest}")


def clone_command(repo: GitWorkdir, dest: str) -> str:
    """The node command that makes ``dest`` a fresh clone of ``repo`` at its ref.

    It clones beside ``dest`` and swaps the clone in only once the checkout
    worked, so a bad URL or ref leaves the node's workdir as it was. Git
    never prompts (there is no one to answer on a node).
    """
    target = remote_path(dest)
    checkout = f" && git -C \"$t/repo\" checkout --quiet {shlex.quote(repo.ref)} --" if repo.ref else ""
    return (f"export GIT_TERMINAL_PROMPT=0 && d=$(dirname {target}) && mkdir -p \"$d\""
            f' && t=$(mktemp -d "$d/.skyk-clone.XXXXXX")'
            f" && {{ git clone --quiet -- {shlex.quote(repo.url)} \"$t/repo\"{checkout}"
            f' && rm -rf {target} && mv "$t/repo" {target} && rmdir "$t"; }}'
            f' || {{ rc=$?; rm -rf "$t"; exit $rc; }}')


def sync_files(handle: ClusterHandle, task: Task) -> None:
    """Copy the workdir (or clone a git workdir) and local file mounts to every node, in parallel."""
    copies: list[tuple[Path, str]] = []
    if task.local_workdir:
        copies.append((Path(task.local_workdir).expanduser(), WORKDIR))
    for dest, src in task.file_mounts.items():
        if isinstance(src, str) and not is_url(src):  # buckets are the nodes' to fetch (lifecycle.buckets)
            copies.append((Path(src).expanduser(), node_path(dest)))
    repo = task.git_workdir
    if not copies and repo is None:
        return

    def copy(spec_and_item) -> None:
        spec, (src, dest) = spec_and_item
        runner = runner_from_spec(spec)
        try:
            runner.put(src, dest)
        except RunnerError as exc:
            raise SkykError(f"syncing {src} to {dest} on {handle.cluster}: {exc}",
                            hint="check the node is reachable: skyk status -r " + handle.cluster) from None

    def clone(spec) -> None:
        # Before the copies: a file mount may land inside the workdir the clone replaces.
        try:
            result = runner_from_spec(spec).run(clone_command(repo, WORKDIR), timeout=CLONE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SkykError(f"{task.source}: workdir: cloning {repo.describe()} on {handle.cluster}"
                            f" took over {CLONE_TIMEOUT} s",
                            hint="check the nodes can reach the repository") from None
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip().splitlines() or [f"exit {result.returncode}"]
            raise SkykError(f"{task.source}: workdir: cloning {repo.describe()} on {handle.cluster}"
                            f" failed: {why[-1]}",
                            hint="check the url and ref, and that the nodes have git and can reach it")

    work = [(n.runner, item) for n in handle.nodes for item in copies]
    with ThreadPoolExecutor(max_workers=min(16, max(len(work), len(handle.nodes)))) as pool:
        if repo is not None:
            list(pool.map(clone, [n.runner for n in handle.nodes]))
        list(pool.map(copy, work))
