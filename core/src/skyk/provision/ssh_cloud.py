"""What every cloud whose nodes are VMs reached over SSH shares.

A plugin for such a cloud subclasses :class:`SSHCloud`, puts the user's key
on each node at creation with :func:`cloud_config` (or its cloud's own
metadata), and describes each node with :func:`ssh_node`. The rest is here:
waiting until every node answers SSH, and stopping a node from inside for
autostop (the cloud's own shutdown behaviour does the rest, so no cloud
credentials ever go to a node).
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import ClassVar

import yaml

from skyk.agent import layout
from skyk.agent.runners import LocalRunner, SSHRunner, runner_from_spec
from skyk.lifecycle.progress import say
from skyk.provision.cloud import Cloud
from skyk.provision.ssh_keys import UserKey
from skyk.provision.types import ClusterHandle, NodeInfo, ProvisionError

#: Where the head node keeps its copy of the user's private key, to reach the workers.
HEAD_KEY = "~/.skyk/ssh/skyk-key"
#: seconds between "waiting for SSH" lines
_HEARTBEAT = 10.0
#: the longest pause between two SSH probes of a node
_MAX_PAUSE = 2.0


def cloud_config(user: str, key: UserKey) -> str:
    """Return cloud-init user data that makes ``user`` with the key and passwordless sudo."""
    entry = {"name": user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
             "ssh_authorized_keys": [key.public]}
    return "#cloud-config\n" + yaml.safe_dump({"users": [entry]}, sort_keys=False)


def ssh_node(node_id: str, internal_ip: str, external_ip: str | None, user: str,
             key: UserKey, head: bool = False) -> NodeInfo:
    """Describe one node: reached from here on its external address (if any) with ``key``,
    and from the head on its internal address with the head's copy of the key (the head
    itself runs its own commands directly)."""
    inside = LocalRunner(python="python3") if head else SSHRunner(internal_ip, user, HEAD_KEY)
    return NodeInfo(node_id=node_id, internal_ip=internal_ip, external_ip=external_ip,
                    runner=SSHRunner(external_ip or internal_ip, user, str(key.private)).spec(),
                    internal_runner=inside.spec())


def wait_for_ssh(handle: ClusterHandle, timeout: float) -> None:
    """Block until every node of ``handle`` runs a command over SSH, probing them in parallel.

    Prints a line while it waits; raises a ``timeout`` error naming the first
    node that never answered, with the last thing SSH said about it.
    """
    deadline = time.monotonic() + timeout

    def probe(index: int) -> str | None:
        """Return None once node ``index`` runs ``true``, or what SSH last said at the deadline."""
        runner = runner_from_spec(handle.nodes[index].runner)
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
                last = lines[-1] if lines else f"ssh exited with {result.returncode}"
            # A booting node refuses connections at once: probe again soon, then less often.
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _MAX_PAUSE)
        return last

    say(f"  waiting for SSH on {len(handle.nodes)} node(s)")
    with ThreadPoolExecutor(max_workers=min(32, len(handle.nodes))) as pool:
        futures = {pool.submit(probe, i): i for i in range(len(handle.nodes))}
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=_HEARTBEAT)
            if pending:
                nodes = ", ".join(_describe(handle, futures[f]) for f in sorted(pending, key=futures.get))
                say(f"  still waiting for SSH on {nodes}")
    failures = {futures[f]: f.result() for f in futures if f.result() is not None}
    if failures:
        first = min(failures)
        raise ProvisionError("timeout", "region", f"{_describe(handle, first)} did not answer SSH within"
                             f" {timeout:g}s ({failures[first]})")


def _describe(handle: ClusterHandle, index: int) -> str:
    node = handle.nodes[index]
    role = "head" if index == 0 else f"worker {index}"
    return f"node {node.node_id} ({role}, {node.ip})"


class SSHCloud(Cloud):
    """A cloud whose nodes are VMs with ``python3``, reached over SSH as :attr:`ssh_user`."""

    #: the login user cloud-init makes on the node (the image's usual user)
    ssh_user: ClassVar[str] = "ubuntu"
    #: seconds to wait for SSH when a caller gives no limit of its own
    ssh_timeout: ClassVar[float] = 600.0

    def wait_ready(self, handle: ClusterHandle, timeout: float) -> None:
        wait_for_ssh(handle, min(timeout, self.ssh_timeout))

    def autostop_command(self, handle: ClusterHandle, down: bool) -> str | None:
        # The head's agent powers off the workers, then its own node; what a
        # powered-off node becomes (stopped, or deleted for --down) is the
        # cloud's shutdown behaviour, set by prepare_autostop.
        return layout.agent_command("python3", "poweroff")
