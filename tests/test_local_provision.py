"""Provisioning on the local cloud: node sandboxes, addresses, namespaces and teardown.

Namespace tests need root and ``ip`` (skipped otherwise, failed in CI). Every
test's uids share a prefix, and a fixture removes any namespace or process
with that prefix afterwards, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shlex
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fakecloud.tools import missing_tool
from skyk.agent.runners import LocalRunner, runner_from_spec
from skyk.builtin import local_network as network
from skyk.builtin import local_sandbox as sandbox
from skyk.builtin.local_cloud import LocalCloud
from skyk.catalog.offering import Offering
from skyk.catalog.store import skyk_home
from skyk.provision.types import ClusterHandle, ProvisionError, ProvisionRequest
from skyk.testing import ProvisioningContract

#: Talks to nodes directly, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def offering() -> Offering:
    return LocalCloud().offering()


@pytest.fixture
def prefix() -> str:
    """The start of every uid this test uses."""
    return "t" + secrets.token_hex(3)


@pytest.fixture
def provision(prefix, offering):
    """Provision a cluster (``provision(num_nodes, cluster=...)``); all are removed after the test."""
    cloud = LocalCloud()
    handles: list[ClusterHandle] = []

    def make(num_nodes: int, cluster: str = "c") -> ClusterHandle:
        uid = f"{prefix}{len(handles)}"
        handle = cloud.provision(ProvisionRequest(cluster, uid, num_nodes, offering))
        handles.append(handle)
        return handle

    yield make
    try:
        for handle in handles:
            cloud.terminate(handle)
    finally:
        _sweep(prefix)


def _sweep(prefix: str) -> None:
    """Remove namespaces and processes left by uids starting with ``prefix``."""
    leftover = [p.name for p in network.NETNS_DIR.glob(f"{network.namespace_name(prefix)}*")]
    inodes = [network.namespace_inode(name) for name in leftover]
    sandbox.kill_processes([], [i for i in inodes if i is not None], grace=0.5)
    network.delete_namespaces(leftover)


@pytest.fixture
def netns(monkeypatch):
    """Require network namespaces (root and ``ip``)."""
    monkeypatch.delenv(network.NETNS_ENV, raising=False)
    if not network.namespaces_enabled():
        missing_tool("network namespaces need root and iproute2's ip")


@pytest.fixture
def loopback(monkeypatch):
    """Force the fallback mode: no namespaces, loopback addresses."""
    monkeypatch.setenv(network.NETNS_ENV, "0")


def runner(handle: ClusterHandle, rank: int) -> LocalRunner:
    return runner_from_spec(handle.nodes[rank].runner)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def get(url: str, timeout: float = 10.0) -> str:
    """GET ``url``, retrying until the server answers or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with DIRECT.open(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def serve(handle: ClusterHandle, rank: int, bind: str) -> None:
    """Serve the node's home over HTTP on ``bind``:8000, saying which node it is."""
    node = runner(handle, rank)
    result = node.run(f"echo {handle.uid}-{rank} > index.html || exit 1; setsid nohup"
                      f" {shlex.quote(sys.executable)} -m http.server 8000 --bind {bind}"
                      " >/dev/null 2>&1 </dev/null &", timeout=30)
    assert result.returncode == 0, result.stderr


def registry_claims() -> dict:
    return json.loads((network._registry_dir() / "addresses.json").read_text())["addresses"]


def test_nodes_have_a_home_a_marker_and_an_address(netns, provision):
    handle = provision(2)
    subnet = network.bridge_subnet()
    ips = [n.internal_ip for n in handle.nodes]
    assert len(set(ips)) == 2 and all(ipaddress.ip_address(ip) in subnet for ip in ips)
    assert handle.cloud == "local" and handle.hourly_price == 0.0 and handle.head is handle.nodes[0]
    assert [n.node_id for n in handle.nodes] == [f"{handle.uid}-0", f"{handle.uid}-1"]
    LocalCloud().wait_ready(handle, 10)
    assert LocalCloud().query(handle) == ["running", "running"]
    for rank, node in enumerate(handle.nodes):
        assert node.runner["netns"] and network.namespace_exists(node.runner["netns"])
        out = runner(handle, rank).run('echo "$HOME $SKYK_NODE_ID"; ip -o -4 addr show dev eth0')
        home, marker = out.stdout.splitlines()[0].split()
        assert home == str(skyk_home() / "local" / f"c-{handle.uid}" / f"node{rank}")
        assert marker == node.node_id
        assert f" {node.internal_ip}/{subnet.prefixlen} " in out.stdout


def test_namespaces_give_each_node_its_own_port_space(netns, provision):
    first, second = provision(2, cluster="a"), provision(1, cluster="b")
    nodes = [(first, 0), (first, 1), (second, 0)]
    for handle, rank in nodes:
        serve(handle, rank, "0.0.0.0")
    # The host reaches each node's port 8000 on the node's own address...
    for handle, rank in nodes:
        assert get(f"http://{handle.nodes[rank].internal_ip}:8000/index.html").strip() \
            == f"{handle.uid}-{rank}"
    # ...and the nodes of a cluster reach each other.
    fetch = (f"{shlex.quote(sys.executable)} -c 'import urllib.request as u;"
             f" o = u.build_opener(u.ProxyHandler({{}}));"
             f" print(o.open(\"http://{first.nodes[1].internal_ip}:8000/index.html\").read().decode())'")
    result = runner(first, 0).run(fetch, timeout=30)
    assert result.stdout.strip() == f"{first.uid}-1", result.stderr


@pytest.mark.parametrize("mode", ["netns", "loopback"])
def test_terminate_kills_every_process_and_removes_the_node(mode, request, provision):
    request.getfixturevalue(mode)
    cloud = LocalCloud()
    handle = provision(1)
    node = runner(handle, 0)
    home = Path(handle.nodes[0].runner["home"])
    escapes = [
        "sleep 300 & echo $! > bg.pid",
        # double fork into a new session, as daemons do
        "(setsid bash -c 'sleep 301 & echo $! > daemon.pid' &)",
        # ignores SIGTERM: needs the SIGKILL after the grace period
        "(trap '' TERM; exec sleep 302) & echo $! > stubborn.pid",
    ]
    if mode == "netns":
        # drops the marker, but cannot leave the namespace
        escapes.append("env -i sleep 303 & echo $! > noenv.pid")
    for command in escapes:
        # Away from run()'s pipes, which would otherwise wait for the sleeps.
        assert node.run("exec >/dev/null 2>&1 </dev/null; " + command, timeout=30).returncode == 0
    direct = node.popen("sleep 304")
    deadline = time.monotonic() + 5
    while len(list(home.glob("*.pid"))) < len(escapes) and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = [int(p.read_text()) for p in home.glob("*.pid")] + [direct.pid]
    assert len(pids) == len(escapes) + 1 and all(alive(pid) for pid in pids)

    started = time.monotonic()
    cloud.terminate(handle)
    assert time.monotonic() - started < sandbox.GRACE_SECONDS + 1.5
    direct.wait(5)
    assert [pid for pid in pids if alive(pid)] == []
    assert not home.parent.exists()
    netns = handle.nodes[0].runner["netns"]
    assert netns is None or not network.namespace_exists(netns)
    assert handle.nodes[0].internal_ip not in registry_claims()
    assert cloud.query(handle) == ["missing"]
    cloud.terminate(handle)  # again: already gone is fine


def test_stop_keeps_files_and_start_brings_the_nodes_back(netns, provision):
    cloud = LocalCloud()
    handle = provision(2)
    node = runner(handle, 1)
    node.run("echo kept > data.txt; sleep 300 >/dev/null 2>&1 </dev/null & echo $! > sleep.pid",
             timeout=30)
    pid = int((Path(handle.nodes[1].runner["home"]) / "sleep.pid").read_text())

    cloud.stop(handle)
    assert cloud.query(handle) == ["stopped", "stopped"]
    assert not alive(pid)
    assert all(network.namespace_exists(n.runner["netns"]) for n in handle.nodes)

    started = cloud.start(handle)
    assert started == handle
    assert cloud.query(started) == ["running", "running"]
    assert node.run("cat data.txt").stdout == "kept\n"

    # After a reboot the namespaces are gone: the node reads as stopped, and
    # start makes them again with the same addresses.
    network.delete_namespaces([handle.nodes[0].runner["netns"]])
    assert cloud.query(handle) == ["stopped", "running"]
    restarted = cloud.start(handle)
    assert [n.internal_ip for n in restarted.nodes] == [n.internal_ip for n in handle.nodes]
    assert cloud.query(restarted) == ["running", "running"]
    cloud.wait_ready(restarted, 10)
    serve(restarted, 0, "0.0.0.0")
    assert get(f"http://{restarted.head.internal_ip}:8000/index.html").strip() == f"{handle.uid}-0"

    cloud.terminate(restarted)
    assert cloud.query(restarted) == ["missing", "missing"]
    with pytest.raises(ProvisionError):
        cloud.start(restarted)


def test_loopback_nodes_get_their_own_127_213_address(loopback, provision):
    handle = provision(2)
    ips = [n.internal_ip for n in handle.nodes]
    assert len(set(ips)) == 2 and all(ip.startswith("127.213.") for ip in ips)
    assert all(n.runner["netns"] is None for n in handle.nodes)
    LocalCloud().wait_ready(handle, 10)
    # Ports are shared with the machine: each node binds its own address.
    for rank, ip in enumerate(ips):
        serve(handle, rank, ip)
    for rank, ip in enumerate(ips):
        assert get(f"http://{ip}:8000/index.html").strip() == f"{handle.uid}-{rank}"


def test_provisioning_one_node_is_fast(netns, provision):
    provision(1)  # the first one may create the bridge
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        provision(1)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.3, timings


def test_a_failed_provision_leaves_nothing_behind(netns, provision, prefix, offering, monkeypatch):
    # A veth name longer than the kernel's 15 characters fails after the
    # first namespace was made.
    monkeypatch.setattr(network, "veth_name", lambda marker: "v" * 20)
    uid = prefix + "x"
    with pytest.raises(ProvisionError) as failure:
        LocalCloud().provision(ProvisionRequest("bad", uid, 2, offering))
    assert failure.value.scope == "cloud"
    assert not (skyk_home() / "local" / f"bad-{uid}").exists()
    assert not network.namespace_exists(network.namespace_name(f"{uid}-0"))
    owners = [claim["owner"] for claim in registry_claims().values()]
    assert not any(f"bad-{uid}" in owner for owner in owners)


def test_a_bad_subnet_or_directory_is_a_provision_error(monkeypatch, offering, prefix):
    monkeypatch.delenv(network.NETNS_ENV, raising=False)
    if network.namespaces_enabled():
        monkeypatch.setenv(network.SUBNET_ENV, "not-a-subnet")
        with pytest.raises(ProvisionError, match="SKYK_LOCAL_SUBNET"):
            LocalCloud().provision(ProvisionRequest("c", prefix, 1, offering))
        monkeypatch.delenv(network.SUBNET_ENV)
    skyk_home().mkdir(parents=True)
    (skyk_home() / "local").write_text("a file where the directory should be")
    with pytest.raises(ProvisionError, match="could not make local nodes"):
        LocalCloud().provision(ProvisionRequest("c", prefix, 1, offering))


def test_concurrent_provisions_get_distinct_addresses(netns, prefix, offering):
    script_up = ("import json, sys\n"
                 "from skyk.builtin.local_cloud import LocalCloud\n"
                 "from skyk.catalog.offering import Offering\n"
                 "from skyk.provision.types import ProvisionRequest\n"
                 "cloud = LocalCloud()\n"
                 "request = ProvisionRequest(sys.argv[1], sys.argv[2], 2, Offering(*json.loads(sys.argv[3])))\n"
                 "handle = cloud.provision(request)\n"
                 "cloud.wait_ready(handle, 30)\n"
                 "print(handle.to_json())\n")
    script_down = ("import sys\n"
                   "from skyk.builtin.local_cloud import LocalCloud\n"
                   "from skyk.provision.types import ClusterHandle\n"
                   "LocalCloud().terminate(ClusterHandle.from_json(sys.stdin.read()))\n")

    def up(i: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script_up, f"c{i}", f"{prefix}{i:02d}",
                               json.dumps(list(offering))], capture_output=True, text=True, timeout=120)

    def down(handle: ClusterHandle) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script_down], input=handle.to_json(),
                              capture_output=True, text=True, timeout=120)

    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(up, range(20)))
        assert [r.stderr for r in results if r.returncode != 0] == []
        handles = [ClusterHandle.from_json(r.stdout) for r in results]
        ips = [n.internal_ip for h in handles for n in h.nodes]
        assert len(ips) == 40 and len(set(ips)) == 40
        assert all(network.namespace_exists(n.runner["netns"]) for h in handles for n in h.nodes)

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(down, handles))
        assert [r.stderr for r in results if r.returncode != 0] == []
        assert not any(network.namespace_exists(n.runner["netns"]) for h in handles for n in h.nodes)
        assert list((skyk_home() / "local").iterdir()) == []
        assert not set(ips) & set(registry_claims())
    finally:
        _sweep(prefix)


def test_autostop_runs_the_clients_skyk(provision, loopback):
    handle = provision(1, cluster="my cluster")
    home = shlex.quote(str(skyk_home()))
    cloud = LocalCloud()
    assert cloud.autostop_command(handle, down=False) == \
        f"SKYK_HOME={home} {shlex.quote(sys.executable)} -m skyk stop 'my cluster' -y"
    assert cloud.autostop_command(handle, down=True).endswith(" -m skyk down 'my cluster' -y")


class TestLocalProvisioningContract(ProvisioningContract):
    """The local cloud passes the provisioning contract a third-party cloud runs on its fake."""

    cloud_name = "local"

    @pytest.fixture
    def cloud_env(self):
        yield None  # this machine: nothing to point at

    @pytest.fixture
    def offering(self) -> Offering:
        return LocalCloud().offering()
