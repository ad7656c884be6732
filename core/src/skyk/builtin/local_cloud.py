"""The built-in ``local`` cloud: this machine, free, always available.

Its single offering is the machine itself: its CPUs, memory and any NVIDIA
GPUs ``nvidia-smi`` reports. Like SkyPilot's Kubernetes cloud it costs
nothing, so it wins whenever it can run the task.

Its nodes are sandboxes on this machine: a home directory and a process
marker each (:mod:`skyk.builtin.local_sandbox`), and, when running as root,
a network namespace with its own address (:mod:`skyk.builtin.local_network`,
which also describes the loopback fallback). Nodes are ready the moment they
exist; stopping one kills its processes and keeps its files and address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from skyk.agent.runners import LocalRunner, runner_from_spec
from skyk.builtin import local_network as network
from skyk.builtin import local_sandbox as sandbox
from skyk.catalog.offering import Offering
from skyk.catalog.store import skyk_home
from skyk.hookspecs import hookimpl
from skyk.provision.cloud import Cloud, CredentialCheck, NodeState
from skyk.provision.types import (
    ClusterHandle,
    NodeInfo,
    ProvisionAttempt,
    ProvisionError,
    ProvisionRequest,
)

NAME = "local"

# nvidia-smi product names -> catalog accelerator names; first match wins,
# so the more specific patterns come first.
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"A100.*80", "A100-80GB"),
    (r"A100", "A100"),
    (r"H100", "H100"),
    (r"H200", "H200"),
    (r"B200", "B200"),
    (r"L40S", "L40S"),
    (r"A10G", "A10G"),
    (r"\bA10\b", "A10"),
    (r"\bL4\b", "L4"),
    (r"V100.*32", "V100-32GB"),
    (r"V100", "V100"),
    (r"\bT4\b", "T4"),
)


def gpu_name(product: str) -> str:
    """Map an ``nvidia-smi`` product name to the catalog's accelerator name."""
    for pattern, name in _GPU_PATTERNS:
        if re.search(pattern, product):
            return name
    return product.replace("NVIDIA ", "").split()[0]


def detect_gpus() -> tuple[str | None, int]:
    """Return (accelerator name, count) of this machine's NVIDIA GPUs, or (None, 0)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None, 0
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, 0
    names = [gpu_name(line.strip()) for line in out.splitlines() if line.strip()]
    if not names:
        return None, 0
    # A mixed machine is offered as its most common GPU.
    top = max(set(names), key=names.count)
    return top, names.count(top)


def memory_gib() -> float:
    """Return this machine's physical memory in GiB."""
    try:
        text = Path("/proc/meminfo").read_text()
        kib = int(re.search(r"MemTotal:\s+(\d+)", text).group(1))
        return round(kib / 1024 / 1024, 1)
    except (OSError, AttributeError):
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)


class LocalCloud(Cloud):
    """Nodes are sandboxes on this machine; no credentials needed."""

    name = NAME
    display_name = "Local"
    default_cpus = None
    default_memory_gib = None

    def check_credentials(self) -> CredentialCheck:
        return CredentialCheck(True, "this machine; no credentials needed")

    def offering(self) -> Offering:
        """Return this machine as an offering."""
        accelerator, count = detect_gpus()
        return Offering(cloud=NAME, instance_type="local", vcpus=float(os.cpu_count() or 1),
                        memory_gib=memory_gib(), region="local", zone=None, price=0.0,
                        spot_price=None, accelerator=accelerator, accelerator_count=float(count))

    def provision(self, request: ProvisionRequest) -> ClusterHandle:
        root = sandbox.cluster_root(request.cluster, request.uid)
        markers = [_marker(request.uid, rank) for rank in range(request.num_nodes)]
        namespaced = network.namespaces_enabled()
        try:
            subnet = network.bridge_subnet() if namespaced else network.LOOPBACK_SUBNET
            # Not exist_ok: the directory is this attempt's alone, and is removed on failure.
            root.mkdir(parents=True)
        except (OSError, network.NetworkError) as exc:
            raise ProvisionError("other", "cloud",
                                 f"could not make local nodes for {request.cluster}: {exc}") from exc
        # Everything terminate needs later; nodes: home, netns, veth, address.
        extra = {"root": str(root), "subnet": str(subnet), "nodes": []}
        try:
            nodes = [{"home": str(home),
                      "netns": network.namespace_name(marker) if namespaced else None,
                      "veth": network.veth_name(marker) if namespaced else None}
                     for home, marker in zip(sandbox.make_homes(root, request.num_nodes), markers,
                                             strict=True)]
            addresses = network.allocate(subnet, [{"owner": n["home"], "netns": n["netns"]}
                                                  for n in nodes])
            extra["nodes"] = [{**n, "address": a} for n, a in zip(nodes, addresses, strict=True)]
            if namespaced:
                network.ensure_bridge(subnet)
                network.add_namespaces(extra["nodes"], subnet)
        except BaseException as exc:
            _destroy(extra, markers)
            if isinstance(exc, (OSError, network.NetworkError)):
                raise ProvisionError("other", "cloud",
                                     f"could not make local nodes for {request.cluster}: {exc}") from exc
            raise
        offering = request.offering
        nodes = tuple(NodeInfo(node_id=marker, internal_ip=node["address"], external_ip=None,
                               runner=LocalRunner(node["home"], marker, node["netns"]).spec())
                      for marker, node in zip(markers, extra["nodes"], strict=True))
        return ClusterHandle(cluster=request.cluster, uid=request.uid, cloud=NAME,
                             region=offering.region, zone=offering.zone,
                             instance_type=offering.instance_type, use_spot=False, hourly_price=0.0,
                             accelerator=offering.accelerator,
                             accelerator_count=offering.accelerator_count, nodes=nodes, extra=extra)

    def wait_ready(self, handle: ClusterHandle, timeout: float) -> None:
        # Nodes are ready once they exist; check each one runs a command.
        try:
            procs = [runner_from_spec(n.runner).popen("true", stdout=subprocess.DEVNULL,
                                                     stderr=subprocess.PIPE, text=True)
                     for n in handle.nodes]
        except OSError as exc:  # e.g. a node directory is gone
            raise ProvisionError("other", "cloud", f"local node cannot run commands: {exc}") from exc
        deadline = time.monotonic() + timeout
        for node, proc in zip(handle.nodes, procs, strict=True):
            try:
                _, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ProvisionError("timeout", "cloud",
                                     f"local node {node.node_id} did not answer in {timeout:g}s") from None
            if proc.returncode != 0:
                raise ProvisionError("other", "cloud", f"local node {node.node_id} cannot run"
                                     f" commands: {err.strip() or proc.returncode}")

    def query(self, handle: ClusterHandle) -> list[NodeState]:
        stopped = sandbox.is_stopped(Path(handle.extra["root"]))
        states: list[NodeState] = []
        for node in handle.extra["nodes"]:
            if not os.path.isdir(node["home"]):
                states.append("missing")
            elif stopped or (node["netns"] and not network.namespace_exists(node["netns"])):
                # A namespace gone without stop() means the machine rebooted:
                # the node's processes are gone, as after a stop.
                states.append("stopped")
            else:
                states.append("running")
        return states

    def stop(self, handle: ClusterHandle) -> None:
        root = Path(handle.extra["root"])
        if not root.is_dir():
            raise ProvisionError("other", "cloud", f"cluster {handle.cluster}'s directory {root} is gone")
        _kill(handle.extra, [n.node_id for n in handle.nodes])
        sandbox.mark_stopped(root)

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        extra = handle.extra
        root = Path(extra["root"])
        if not all(os.path.isdir(n["home"]) for n in extra["nodes"]):
            raise ProvisionError("other", "cloud", f"cluster {handle.cluster}'s directory {root} is gone")
        subnet = ipaddress.IPv4Network(extra["subnet"])
        try:
            # A node without its namespace (or any loopback node) may have lost
            # its address claim in a reboot: claim it again (rarely, it changes)
            # and rebuild the namespace. Live namespaces keep their claims.
            nodes, rebuild = [], []
            for node in extra["nodes"]:
                if node["netns"] and network.namespace_exists(node["netns"]):
                    nodes.append(node)
                    continue
                claim = {"owner": node["home"], "netns": node["netns"]}
                node = {**node, "address": network.keep(subnet, node["address"], claim)}
                nodes.append(node)
                if node["netns"]:
                    # A fresh veth name: the old pair may still be dying in the kernel's
                    # background cleanup of the namespace stop() deleted ("File exists").
                    node["veth"] = network.veth_name(f"{node['netns']}-{time.time_ns()}")
                    rebuild.append(node)
            if rebuild:
                network.ensure_bridge(subnet)
                network.add_namespaces(rebuild, subnet)
        except (OSError, network.NetworkError) as exc:
            raise ProvisionError("other", "cloud",
                                 f"could not restart local nodes of {handle.cluster}: {exc}") from exc
        sandbox.clear_stopped(root)
        infos = tuple(dataclasses.replace(info, internal_ip=node["address"])
                      for info, node in zip(handle.nodes, nodes, strict=True))
        return dataclasses.replace(handle, nodes=infos, extra={**extra, "nodes": nodes})

    def terminate(self, handle: ClusterHandle) -> None:
        _destroy(handle.extra, [n.node_id for n in handle.nodes])

    def find_attempt(self, attempt: ProvisionAttempt) -> list[str]:
        extra = _attempt_leftovers(attempt)
        found = [f"directory {extra['root']}"] if os.path.isdir(extra["root"]) else []
        found += [f"namespace {n['netns']}" for n in extra["nodes"] if n["netns"]]
        found += [f"address {n['address']}" for n in extra["nodes"] if n["address"]]
        return found

    def remove_attempt(self, attempt: ProvisionAttempt) -> None:
        extra = _attempt_leftovers(attempt)
        _destroy(extra, [_marker(attempt.uid, rank) for rank in range(len(extra["nodes"]))])

    def autostop_command(self, handle: ClusterHandle, down: bool) -> str | None:
        # The head node's agent runs this on this machine, with the client's
        # skyk and state directory: the node cannot tear itself down otherwise.
        verb = "down" if down else "stop"
        return (f"SKYK_HOME={shlex.quote(str(skyk_home()))} {shlex.quote(sys.executable)}"
                f" -m skyk {verb} {shlex.quote(handle.cluster)} -y")


def _marker(uid: str, rank: int) -> str:
    """The process marker (and namespace name stem) of node ``rank`` made by attempt ``uid``."""
    return f"{uid}-{rank}"


def _attempt_leftovers(attempt: ProvisionAttempt) -> dict:
    """Rebuild the ``extra`` of an attempt whose provision() never returned, from what exists.

    Everything an attempt makes carries its uid: the cluster directory's name,
    each node's marker and namespace name, and (through the node directory)
    each address claim's owner. Nodes are listed up to the highest rank found.
    """
    root = sandbox.cluster_root(attempt.cluster, attempt.uid)
    claims = network.claims_under(root)
    stem = network.namespace_name(_marker(attempt.uid, 0))[:-1]
    ranks = [int(name[len(stem):]) for name in network.namespaces_starting(stem)
             if name[len(stem):].isdigit()]
    ranks += [int(p.name[4:]) for p in root.glob("node*") if p.name[4:].isdigit()]
    ranks += [int(Path(owner).name[4:]) for owner in claims.values() if Path(owner).name[4:].isdigit()]
    by_owner = {owner: address for address, owner in claims.items()}
    nodes = []
    for rank in range(max(ranks, default=-1) + 1):
        home = str(root / f"node{rank}")
        netns = network.namespace_name(_marker(attempt.uid, rank))
        nodes.append({"home": home, "netns": netns if network.namespace_exists(netns) else None,
                      "address": by_owner.get(home)})
    return {"root": str(root), "nodes": nodes}


def _kill(extra: dict, markers: list[str]) -> None:
    """Kill every process of the cluster's nodes."""
    inodes = [network.namespace_inode(n["netns"]) for n in extra["nodes"] if n["netns"]]
    sandbox.kill_processes(markers, [i for i in inodes if i is not None])
    sandbox.release_mounts(Path(extra["root"]))


def _destroy(extra: dict, markers: list[str]) -> None:
    """Remove whatever exists of a cluster: processes, namespaces, addresses, files.

    Each step tolerates what is already gone, so this serves terminate, a
    repeated terminate, and cleaning up after a provision that failed midway.
    """
    _kill(extra, markers)
    try:
        network.delete_namespaces([n["netns"] for n in extra["nodes"] if n["netns"]])
    except network.NetworkError as exc:
        raise ProvisionError("other", "cloud", str(exc)) from exc
    network.release({n["address"]: n["home"] for n in extra["nodes"] if n["address"]})
    sandbox.remove(Path(extra["root"]))


@hookimpl
def skyk_clouds():
    return [LocalCloud()]


@hookimpl
def skyk_catalog_offerings(catalog_dir):
    return [LocalCloud().offering()]
