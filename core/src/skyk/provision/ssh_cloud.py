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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import ClassVar

from skyk.agent import layout
from skyk.agent.runners import (
    LocalRunner,
    SSHRunner,
    remote_path,
    runner_from_spec,
    wait_until_answers,
)
from skyk.errors import SkykError
from skyk.lifecycle.progress import say
from skyk.provision.cloud import Cloud
from skyk.provision.ssh_keys import UserKey, user_key
from skyk.provision.types import ClusterHandle, NodeInfo, ProvisionError

#: Where the head node keeps its copy of the user's private key, to reach the workers.
HEAD_KEY = "~/.skyk/ssh/skyk-key"
#: The key exchange the head prefers towards its workers. OpenSSH's default
#: (sntrup761x25519, post-quantum) costs ~85 ms of the client's CPU per
#: connection, which a small head pays once per worker at launch; traffic
#: between a head and its workers stays inside the cluster's network, where
#: classical X25519 is the usual choice. Others remain as fallbacks.
INTERNAL_KEX = "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org"
#: seconds between "waiting for SSH" lines
_HEARTBEAT = 10.0


def cloud_config(user: str, key: UserKey) -> str:
    """Return cloud-init user data that makes ``user`` with the key and passwordless sudo."""
    entry = {"name": user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
             "ssh_authorized_keys": [key.public]}
    import yaml  # only a launch writes cloud-init; listing prices must not pay for PyYAML

    return "#cloud-config\n" + yaml.safe_dump({"users": [entry]}, sort_keys=False)


def ssh_node(node_id: str, internal_ip: str, external_ip: str | None, user: str,
             key: UserKey, head: bool = False) -> NodeInfo:
    """Describe one node: reached from here on its external address (if any) with ``key``,
    and from the head on its internal address with the head's copy of the key (the head
    itself runs its own commands directly)."""
    inside = (LocalRunner(python="python3") if head
              else SSHRunner(internal_ip, user, HEAD_KEY, options=(INTERNAL_KEX,)))
    return NodeInfo(node_id=node_id, internal_ip=internal_ip, external_ip=external_ip,
                    runner=SSHRunner(external_ip or internal_ip, user, str(key.private)).spec(),
                    internal_runner=inside.spec())


def wait_for_ssh(handle: ClusterHandle, timeout: float, ranks: Sequence[int] | None = None) -> None:
    """Block until nodes ``ranks`` (default: all) of ``handle`` run a command over SSH from here.

    Probes them in parallel and prints a line while it waits; raises a
    ``timeout`` error naming the first node that never answered, with the
    last thing SSH said about it.
    """
    ranks = list(range(len(handle.nodes))) if ranks is None else list(ranks)
    deadline = time.monotonic() + timeout
    say(f"  waiting for SSH on {_count(handle, ranks)}")
    with ThreadPoolExecutor(max_workers=min(32, len(ranks))) as pool:
        futures = {pool.submit(wait_until_answers, runner_from_spec(handle.nodes[r].runner), deadline): r
                   for r in ranks}
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


def wait_for_workers_from_head(handle: ClusterHandle, timeout: float) -> None:
    """Block until every worker answers SSH from the head, over the internal network.

    The head gets the key and the agent, and its agent probes the workers:
    the connections it opens stay up for the first job, so each worker pays
    for one SSH handshake, not one from here and another from the head.
    """
    from skyk.agent.client import AgentClient, AgentError

    workers = list(range(1, len(handle.nodes)))
    say(f"  waiting for SSH on {_count(handle, workers)} from the head")
    try:
        give_head_the_key(handle)
        client = AgentClient(runner_from_spec(handle.head.runner), timeout=timeout)
        client.install()
        unanswered = client.wait_nodes([handle.nodes[r].internal_runner for r in workers], timeout)
    except (AgentError, SkykError) as exc:
        raise ProvisionError("other", "region", f"the head node could not check the workers: "
                             f"{exc.one_line() if isinstance(exc, SkykError) else exc}") from None
    if unanswered:
        first = min(unanswered)
        rank = workers[first]
        raise ProvisionError("timeout", "region", f"{_describe(handle, rank, internal=True)} did not answer"
                             f" SSH from the head within {timeout:g}s ({unanswered[first]})")


def give_head_the_key(handle: ClusterHandle) -> None:
    """Give the head the user's private key, with which it reaches the workers (see ``ssh_node``).

    The key travels on stdin into a file only the node's user can read.
    """
    target = remote_path(HEAD_KEY)
    command = f'umask 077 && mkdir -p "$(dirname {target})" && cat > {target}'
    try:
        result = runner_from_spec(handle.head.runner).run(
            command, input=user_key().private.read_text(), timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = str(exc) or type(exc).__name__
    else:
        if result.returncode == 0:
            return
        reason = result.stderr.strip() or f"exit {result.returncode}"
    raise SkykError(f"copying the SSH key to the head node of {handle.cluster}: {reason}",
                    hint=f"check the node is reachable: skyk status -r {handle.cluster}")


def _count(handle: ClusterHandle, ranks: list[int]) -> str:
    if ranks == [0]:
        return "the head node"
    return f"{len(ranks)} {'worker' if 0 not in ranks else 'node'}(s)"


def _describe(handle: ClusterHandle, index: int, internal: bool = False) -> str:
    node = handle.nodes[index]
    role = "head" if index == 0 else f"worker {index}"
    return f"node {node.node_id} ({role}, {node.internal_ip if internal else node.ip})"


class SSHCloud(Cloud):
    """A cloud whose nodes are VMs with ``python3``, reached over SSH as :attr:`ssh_user`."""

    #: the login user cloud-init makes on the node (the image's usual user)
    ssh_user: ClassVar[str] = "ubuntu"
    #: seconds to wait for SSH when a caller gives no limit of its own
    ssh_timeout: ClassVar[float] = 600.0

    def wait_ready(self, handle: ClusterHandle, timeout: float) -> None:
        # Only the head is reached from here; the head checks its workers.
        timeout = min(timeout, self.ssh_timeout)
        started = time.monotonic()
        wait_for_ssh(handle, timeout, ranks=[0])
        if len(handle.nodes) > 1:
            wait_for_workers_from_head(handle, max(1.0, timeout - (time.monotonic() - started)))

    def autostop_command(self, handle: ClusterHandle, down: bool) -> str | None:
        # The head's agent powers off the workers, then its own node; what a
        # powered-off node becomes (stopped, or deleted for --down) is the
        # cloud's shutdown behaviour, set by prepare_autostop.
        return layout.agent_command("python3", "poweroff")
