"""Addresses and network namespaces for the local cloud's nodes.

Two modes, chosen per cluster at provisioning time:

* **Namespaces** (root, ``ip`` installed, ``SKYK_LOCAL_NETNS`` not ``0``):
  each node gets its own network namespace with ``lo`` up and a veth pair
  whose host end is attached to the bridge ``skyk0``. The bridge holds the
  subnet's first address (``10.213.0.1/16``, or ``SKYK_LOCAL_SUBNET``) and is
  every node's default gateway. Nodes have their own port space, so two
  clusters that both bind port 8000 run side by side; the host reaches each
  node on its own address and the nodes of a cluster reach each other over
  the bridge. Best effort, never fatal: IPv4 forwarding is switched on and,
  if ``iptables`` is installed, the subnet is masqueraded (and let through
  ``FORWARD``, which Docker sets to DROP), so setup steps such as
  ``pip install`` reach the internet from inside a namespace.
* **Loopback** (otherwise): no namespace; each node gets a distinct address
  in ``127.213.0.0/16``, which Linux routes to ``lo`` without configuration.
  The port space is shared with this machine and every other node: a service
  must bind its node's own address (``$SKYK_NODE_IP``), because two
  clusters that both bind ``0.0.0.0:8000`` collide.

The bridge and loopback addresses belong to the whole machine, not to one
``SKYK_HOME``, so addresses are handed out from one registry per machine
(``/run/skyk-local`` for root, else one per user in the temporary directory),
guarded by ``flock`` against concurrent ``skyk`` processes.

The fake cloud's node twins (``tests/fakecloud/twins.py``) build on the same
functions with a bridge of their own and neither uplink nor default route.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: The host bridge every namespaced node is attached to.
BRIDGE = "skyk0"
DEFAULT_SUBNET = "10.213.0.0/16"
SUBNET_ENV = "SKYK_LOCAL_SUBNET"
NETNS_ENV = "SKYK_LOCAL_NETNS"
#: Node addresses when namespaces are not used.
LOOPBACK_SUBNET = ipaddress.IPv4Network("127.213.0.0/16")
#: Where ``ip netns`` keeps its namespaces (bind mounts named after them).
NETNS_DIR = Path("/run/netns")
#: Per-namespace files ``ip netns exec`` mounts over /etc (resolv.conf).
NETNS_ETC = Path("/etc/netns")
#: Offset of the first node address in a subnet: .0 is the network, .1 the bridge.
_FIRST_NODE = 2
_IFF_UP = 0x1


class NetworkError(Exception):
    """A namespace, veth or address could not be set up or removed."""


def namespaces_enabled() -> bool:
    """Return whether new nodes get their own network namespace.

    Needs root and ``ip``; ``SKYK_LOCAL_NETNS=0`` turns namespaces off.
    """
    return (os.environ.get(NETNS_ENV, "1") != "0" and os.geteuid() == 0
            and shutil.which("ip") is not None)


def bridge_subnet() -> ipaddress.IPv4Network:
    """Return the namespaced nodes' subnet (``SKYK_LOCAL_SUBNET``, default 10.213.0.0/16)."""
    text = os.environ.get(SUBNET_ENV) or DEFAULT_SUBNET
    try:
        subnet = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise NetworkError(f"{SUBNET_ENV}={text!r} is not a subnet: {exc}") from None
    if not isinstance(subnet, ipaddress.IPv4Network) or subnet.prefixlen > 29:
        raise NetworkError(f"{SUBNET_ENV}={text!r} must be an IPv4 subnet of /29 or larger")
    return subnet


def gateway(subnet: ipaddress.IPv4Network) -> str:
    """Return the bridge's address in ``subnet``: its first host address."""
    return str(subnet.network_address + 1)


def namespace_name(marker: str) -> str:
    """Return the namespace name of the node marked ``marker``."""
    return "skyk-" + re.sub(r"[^A-Za-z0-9_.-]", "_", marker)


def veth_name(marker: str, prefix: str = "skv") -> str:
    """Return the host end of the node's veth pair: ``prefix`` and 10 hex digits.

    Unique per launch attempt and per restart, not per address, so a pair the kernel
    is still destroying in the background never blocks a new node. The prefix tells
    whose pair it is (the fake cloud's node twins use their own); the kernel allows
    15 characters, so it has at most 5.
    """
    if len(prefix) > 5:
        raise ValueError(f"veth prefix {prefix!r} is longer than 5 characters")
    return prefix + hashlib.blake2s(marker.encode(), digest_size=5).hexdigest()


def namespace_exists(name: str) -> bool:
    """Return whether namespace ``name`` exists."""
    return (NETNS_DIR / name).exists()


def namespaces_starting(prefix: str) -> list[str]:
    """Return the names of the existing namespaces that start with ``prefix``."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except OSError:  # no namespace was ever made on this machine
        return []


def namespace_inode(name: str) -> int | None:
    """Return the inode identifying namespace ``name`` (as in ``/proc/PID/ns/net``), or None."""
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


# -- address registry -------------------------------------------------------

def _registry_dir() -> Path:
    # For root, beside the namespaces in /run: a reboot wipes both together.
    if os.geteuid() == 0:
        return Path("/run/skyk-local")
    return Path(tempfile.gettempdir()) / f"skyk-local-{os.getuid()}"


@contextlib.contextmanager
def _registry() -> Iterator[dict]:
    """Hold the registry's lock and yield its data; written back when the block succeeds."""
    directory = _registry_dir()
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "addresses.json"
    # A separate lock file: the data file is replaced on every write, and a
    # lock on a replaced inode would not exclude anyone.
    with open(directory / "addresses.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        data.setdefault("addresses", {})
        data.setdefault("cursors", {})
        yield data
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)


def _forget_abandoned(addresses: dict[str, dict]) -> None:
    """Drop claims whose node directory and namespace are both gone.

    This reclaims addresses of clusters whose files were deleted without
    ``terminate`` (a removed test directory, a wiped SKYK_HOME). A namespace
    that still exists keeps its address, as it still holds it on the bridge.
    Callers create the node directory before claiming, so a claim in
    progress is never taken for abandoned.
    """
    for address, claim in list(addresses.items()):
        netns = claim.get("netns")
        if not os.path.isdir(claim["owner"]) and not (netns and namespace_exists(netns)):
            del addresses[address]


def _next_free(data: dict, subnet: ipaddress.IPv4Network) -> str:
    # Next fit, not lowest free: a just-released address is reused only after
    # the whole subnet has gone round, so no neighbour still caches the old
    # node's MAC for it.
    key = str(subnet)
    last = subnet.num_addresses - 2  # the broadcast address is never handed out
    cursor = data["cursors"].get(key, _FIRST_NODE)
    for _ in range(last - _FIRST_NODE + 1):
        if not _FIRST_NODE <= cursor <= last:
            cursor = _FIRST_NODE
        address = str(subnet.network_address + cursor)
        cursor += 1
        if address not in data["addresses"]:
            data["cursors"][key] = cursor
            return address
    raise NetworkError(f"no free address left in {subnet}")


def allocate(subnet: ipaddress.IPv4Network, claims: list[dict]) -> list[str]:
    """Claim one free address in ``subnet`` per claim, atomically across processes.

    A claim is ``{"owner": node directory, "netns": namespace or None}``; the
    owner directory must already exist.
    """
    with _registry() as data:
        _forget_abandoned(data["addresses"])
        addresses = []
        for claim in claims:
            address = _next_free(data, subnet)
            data["addresses"][address] = claim
            addresses.append(address)
        return addresses


def keep(subnet: ipaddress.IPv4Network, address: str, claim: dict) -> str:
    """Claim ``address`` for ``claim`` again, after a reboot wiped the registry.

    Returns ``address``, or a new one if another node took it meanwhile.
    """
    with _registry() as data:
        _forget_abandoned(data["addresses"])
        holder = data["addresses"].get(address)
        if holder is not None and holder["owner"] != claim["owner"]:
            address = _next_free(data, subnet)
        data["addresses"][address] = claim
        return address


def claims_under(directory: Path) -> dict[str, str]:
    """Return ``{address: owner}`` of the claims whose owner (a node directory) is inside ``directory``."""
    with _registry() as data:
        return {address: claim["owner"] for address, claim in data["addresses"].items()
                if Path(claim["owner"]).parent == directory}


def release(addresses: dict[str, str]) -> None:
    """Give back addresses, given as ``{address: owner directory}``.

    Only claims still held by that owner are dropped, so releasing twice, or
    after the address went to another node, is harmless.
    """
    with _registry() as data:
        for address, owner in addresses.items():
            claim = data["addresses"].get(address)
            if claim is not None and claim["owner"] == owner:
                del data["addresses"][address]


# -- bridge and namespaces --------------------------------------------------

def ip_batch(commands: list[str], netns: str | None = None, force: bool = False) -> None:
    """Run ``commands`` in one ``ip -batch`` process (inside ``netns`` if given).

    With ``force`` every command runs even after one fails; NetworkError is
    still raised at the end if any did.
    """
    argv = ["ip"]
    if netns:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    result = subprocess.run([*argv, "-batch", "-"], input="\n".join(commands) + "\n",
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise NetworkError(f"ip {' '.join(argv[1:])}: {result.stderr.strip() or result.returncode}")


def _bridge_up(bridge: str = BRIDGE) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{bridge}/flags").read_text(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & _IFF_UP)


def ensure_bridge(subnet: ipaddress.IPv4Network, bridge: str = BRIDGE,
                  share_uplink: bool = True) -> None:
    """Create ``bridge`` with ``subnet``'s gateway address, unless it is already there.

    Safe against other processes doing the same at the same moment. With
    ``share_uplink`` (the local cloud) nodes may also reach the internet
    through this machine; without it (the fake cloud's node twins) nothing
    but the bridge's subnet is reachable.
    """
    address = f"{gateway(subnet)}/{subnet.prefixlen}"
    if _bridge_up(bridge):
        shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge],
                               capture_output=True, text=True, timeout=30).stdout
        if f" {address} " in shown:
            return
    # -force: another process may have created the bridge since we looked
    # ("File exists"); the check below tells whether it is there now.
    with contextlib.suppress(NetworkError):
        ip_batch([f"link add {bridge} type bridge", f"addr replace {address} dev {bridge}",
                  f"link set {bridge} up"], force=True)
    if not _bridge_up(bridge):
        raise NetworkError(f"could not create the bridge {bridge}")
    if share_uplink:
        _share_uplink(subnet)


def address_for_nodes() -> str | None:
    """Return this machine's address as namespaced nodes see it (the bridge), or None.

    None when new nodes would not get namespaces: they share this machine's
    network and reach its 127.0.0.1 directly. Otherwise the bridge is created
    if it is not there yet (the first node would create it anyway), so a
    server bound to the address is reachable from every node, now and later.
    Raises NetworkError when the bridge cannot be set up.
    """
    if not namespaces_enabled():
        return None
    subnet = bridge_subnet()
    ensure_bridge(subnet)
    return gateway(subnet)


def _share_uplink(subnet: ipaddress.IPv4Network) -> None:
    """Best effort: let nodes reach the internet through this machine; never fails."""
    with contextlib.suppress(OSError):
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        if forward.read_text().strip() != "1":
            forward.write_text("1\n")
    iptables = shutil.which("iptables")
    if not iptables:
        return
    rules = (("nat", "-A", "POSTROUTING", "-s", str(subnet), "!", "-o", BRIDGE, "-j", "MASQUERADE"),
             ("filter", "-I", "FORWARD", "-i", BRIDGE, "-j", "ACCEPT"),
             ("filter", "-I", "FORWARD", "-o", BRIDGE, "-j", "ACCEPT"))
    for table, add, chain, *rule in rules:
        try:
            if subprocess.run([iptables, "-w", "-t", table, "-C", chain, *rule],
                              capture_output=True, timeout=10).returncode != 0:
                subprocess.run([iptables, "-w", "-t", table, add, chain, *rule],
                               capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return


def _namespace_resolv_conf() -> str | None:
    """Return a resolv.conf for namespaces when the host's points at a loopback resolver.

    ``127.0.0.53`` (systemd-resolved) inside a namespace is the namespace's
    own ``lo``, where nothing answers; the resolver's upstream list works.
    """
    try:
        host = Path("/etc/resolv.conf").read_text()
        servers = re.findall(r"^\s*nameserver\s+(\S+)", host, re.MULTILINE)
        if servers and all(ipaddress.ip_address(s).is_loopback for s in servers):
            return Path("/run/systemd/resolve/resolv.conf").read_text()
    except (OSError, ValueError):
        pass
    return None


def add_namespaces(nodes: list[dict], subnet: ipaddress.IPv4Network, bridge: str = BRIDGE,
                   default_route: bool = True) -> None:
    """Create each node's namespace and veth pair, and give it its address.

    ``nodes`` are ``{"netns", "veth", "address"}`` records. Inside, the veth
    end is ``eth0`` and ``lo`` is up. With ``default_route`` everything outside
    the subnet goes via ``bridge``; without it a node reaches its subnet only.
    """
    host = []
    for node in nodes:
        host += [f"netns add {node['netns']}",
                 f"link add {node['veth']} type veth peer name eth0 netns {node['netns']}",
                 f"link set {node['veth']} master {bridge} up"]
    ip_batch(host)
    resolv = _namespace_resolv_conf()
    # One ip process per namespace (a batch cannot switch namespaces), all at once.
    procs = []
    for node in nodes:
        if resolv is not None:
            etc = NETNS_ETC / node["netns"]
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(resolv)
        inside = ["link set lo up", "link set eth0 up",
                  f"addr add {node['address']}/{subnet.prefixlen} dev eth0"]
        if default_route:
            inside.append(f"route add default via {gateway(subnet)}")
        proc = subprocess.Popen(["ip", "-n", node["netns"], "-batch", "-"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append((node["netns"], proc, "\n".join(inside) + "\n"))
    errors = []
    for name, proc, script in procs:
        _, err = proc.communicate(script, timeout=60)
        if proc.returncode != 0:
            errors.append(f"{name}: {err.strip()}")
    if errors:
        raise NetworkError("configuring namespaces failed: " + "; ".join(errors))


def delete_namespaces(names: list[str]) -> None:
    """Delete namespaces (and with them their veth pairs); missing ones are skipped.

    The kernel destroys the veth pairs of a deleted namespace in the
    background, which is why :func:`veth_name` never reuses a name.
    """
    for name in names:
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    present = [n for n in names if namespace_exists(n)]
    if not present:
        return
    with contextlib.suppress(NetworkError):
        ip_batch([f"netns del {name}" for name in present], force=True)
    left = [n for n in present if namespace_exists(n)]
    if left:
        raise NetworkError(f"could not delete namespace(s) {', '.join(left)}")
