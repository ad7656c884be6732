"""Node twins (tests/fakecloud/twins.py) against the real sshd and the real ssh client.

Every twin here logs in with a fresh ed25519 key, as a cloud plugin's node
would. Without root, ``ip``, ``unshare``, sshd, ssh or sudo the tests that
boot twins are skipped, except in CI (``CI`` set), where that is a failure.
Run with ``-s`` to see how long creating twins takes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakecloud.twins import TwinError, TwinHost, parse_cloud_config, require_twin_tools, ssh_to_twin
from skyk.builtin import local_network as network
from skyk.builtin import local_sandbox as sandbox

TESTS = Path(__file__).resolve().parent
#: This module's test bed: its own bridge and subnet, so another test bed
#: (the EC2 layer's, on the defaults) may run beside it.
BRIDGE, SUBNET = "skykfct0", "10.215.0.0/16"
#: The crash-and-sweep test's test bed.
CRASH_BRIDGE, CRASH_SUBNET = "skykfct1", "10.216.0.0/16"
USER = "skyk"


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "skyk-twin-test",
                    "-f", str(path)], check=True, capture_output=True)
    return path


def cloud_config(public_key: str, name: str = USER) -> str:
    """Return user data as a cloud plugin sends it: one sudo user with ``public_key``."""
    return textwrap.dedent(f"""\
        #cloud-config
        users:
          - default
          - name: {name}
            shell: /bin/bash
            sudo: ALL=(ALL) NOPASSWD:ALL
            ssh_authorized_keys:
              - {public_key}
        """)


@dataclass
class Bed:
    """The module's TwinHost, the keys, and the on_shutdown calls it received."""

    host: TwinHost
    key: Path
    wrong_key: Path
    user_data: str
    shutdowns: list = field(default_factory=list)

    def create(self, name: str, user_data: str | None = None) -> object:
        """Create a twin that the module's key logs in to (or with ``user_data``)."""
        return self.host.create(name, self.user_data if user_data is None else user_data)


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Bed]:
    """One TwinHost for the module; its twins go when it closes."""
    require_twin_tools()
    keys = tmp_path_factory.mktemp("keys")
    key, wrong = _keygen(keys / "key"), _keygen(keys / "wrong")
    shutdowns: list = []
    host = TwinHost(tmp_path_factory.mktemp("twins") / "root", bridge=BRIDGE, subnet=SUBNET,
                    on_shutdown=shutdowns.append)
    try:
        yield Bed(host, key, wrong, cloud_config(key.with_suffix(".pub").read_text().strip()),
                  shutdowns)
    finally:
        host.close()


def ssh(key: Path, address: str, command: str, user: str = USER,
        timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``command`` as ``user`` on ``address`` with the real ssh client; no config, no agent."""
    return ssh_to_twin(key, address, command, user, timeout)


def wait_for(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def banner(address: str, port: int = 22) -> bytes:
    """Return the first bytes an SSH server at ``address`` sends."""
    with socket.create_connection((address, port), timeout=5) as sock:
        return sock.recv(7)


def namespaces() -> list[str]:
    """Return the names ``ip netns list`` shows."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def bridge_ports(bridge: str) -> set[str]:
    """Return the interfaces attached to ``bridge``."""
    brif = Path(f"/sys/class/net/{bridge}/brif")
    return {p.name for p in brif.iterdir()} if brif.is_dir() else set()


# -- cloud-config, without root --------------------------------------------------

def test_cloud_config_users_as_skyk_uses_them():
    users, notes = parse_cloud_config(textwrap.dedent("""\
        #cloud-config
        package_update: false
        users:
          - default
          - name: alice
            ssh-authorized-keys: [ssh-ed25519 AAAA alice]
            sudo: [ALL=(ALL) NOPASSWD:ALL, "ALL=(bob) ALL"]
            groups: [sudo]
          - name: bob
            ssh_authorized_keys: ssh-ed25519 BBBB bob
            sudo: false
            shell: /bin/sh
          - name: Bad Name
          - {shell: /bin/sh}
        """))
    assert [(u.name, u.ssh_authorized_keys, u.sudo, u.shell) for u in users] == [
        ("alice", ("ssh-ed25519 AAAA alice",), ("ALL=(ALL) NOPASSWD:ALL", "ALL=(bob) ALL"),
         "/bin/bash"),
        ("bob", ("ssh-ed25519 BBBB bob",), (), "/bin/sh")]
    assert len(notes) == 2 and all("bad or missing name" in note for note in notes)


@pytest.mark.parametrize("user_data", [None, "", "#!/bin/bash\necho hi\n", "#cloud-config\n",
                                       "#cloud-config\nusers: [default]\n", "#cloud-config\n: [\n"])
def test_no_cloud_config_users_means_no_users(user_data):
    users, notes = parse_cloud_config(user_data)
    assert users == [] and len(notes) <= 1


def test_a_newline_cannot_smuggle_a_sudoers_line():
    users, notes = parse_cloud_config(
        '#cloud-config\nusers:\n  - name: eve\n    sudo: "ALL=(ALL) ALL\\nroot ALL=(ALL) ALL"\n')
    assert users == [] and "spans lines" in notes[0]


# -- twins -----------------------------------------------------------------------

def test_login_over_the_public_address_as_the_cloud_config_user(bed):
    start = time.monotonic()
    twin = bed.create("login")
    took = time.monotonic() - start
    print(f"\ncreate: one twin in {took * 1000:.0f} ms")
    assert twin.state == "running" and twin.public_ip and twin.public_ip != twin.private_ip
    result = ssh(bed.key, twin.public_ip, 'whoami; echo "$HOME"; sudo -n true && echo sudo-ok;'
                 " stat -c %U:%a ~ ~/.ssh/authorized_keys")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [USER, f"/home/{USER}", "sudo-ok", f"{USER}:750", f"{USER}:600"]
    # The private address is reachable from this machine too.
    assert ssh(bed.key, twin.private_ip, "whoami").stdout.strip() == USER
    assert (twin.home_root / USER / ".ssh" / "authorized_keys").is_file()
    twin.terminate()


def test_twins_share_no_files_and_reach_each_other_but_nothing_else(bed):
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda name: bed.create(name), ["iso-a", "iso-b"])
    wrote = ssh(bed.key, a.public_ip, "echo a > ~/secret && echo a > /tmp/secret"
                " && echo a > /var/tmp/secret")
    assert wrote.returncode == 0, wrote.stderr
    assert (a.home_root / USER / "secret").read_text() == "a\n"
    looked = ssh(bed.key, b.public_ip, "find /tmp /var/tmp /home -name secret")
    assert looked.returncode == 0 and looked.stdout == "", looked.stderr
    assert not Path("/tmp/secret").exists() or Path("/tmp/secret").read_text() != "a\n"
    # A reaches B's sshd on B's private address; with no route out, nothing else.
    reach = ssh(bed.key, a.public_ip,
                f"exec 3<>/dev/tcp/{b.private_ip}/22 && head -c 7 <&3; echo;"
                " (exec 4<>/dev/tcp/198.51.100.1/22) 2>&1; ip route")
    assert reach.returncode == 0, reach.stderr
    lines = reach.stdout.splitlines()
    assert lines[0] == "SSH-2.0"
    assert "Network is unreachable" in lines[1]
    assert "default" not in reach.stdout
    a.terminate()
    b.terminate()


def test_wrong_key_or_no_cloud_config_cannot_log_in(bed):
    with ThreadPoolExecutor(3) as pool:
        keyed, bare, script = pool.map(lambda args: bed.create(*args), [
            ("refuse-keyed", None), ("refuse-bare", ""), ("refuse-script", "#!/bin/sh\ntrue\n")])
    wrong = ssh(bed.wrong_key, keyed.public_ip, "true")
    assert wrong.returncode == 255 and "Permission denied" in wrong.stderr
    for twin in (bare, script):
        refused = ssh(bed.key, twin.public_ip, "true")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr
        assert "no users created" in (twin.directory / "cloud-init.log").read_text()
    for twin in (keyed, bare, script):
        twin.terminate()


def test_shutdown_inside_reaches_the_test_bed_not_this_machine(bed):
    twin = bed.create("autostop")
    requests = twin.directory / "run" / "twin" / "shutdown"
    refused = ssh(bed.key, twin.public_ip, "/sbin/shutdown -h now")
    assert refused.returncode == 1 and refused.stderr.strip() == "Must be root."
    assert list(requests.iterdir()) == []
    done = ssh(bed.key, twin.public_ip, "sudo shutdown -h now")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: twin in bed.shutdowns, "on_shutdown(twin)")
    assert bed.shutdowns.count(twin) == 1 and list(requests.iterdir()) == []
    # This machine is still up, and so is the twin: on_shutdown decides (here: nothing).
    assert twin.state == "running" and ssh(bed.key, twin.public_ip, "true").returncode == 0
    # A request left while stopped is never acted on: start() drops it, and the
    # next real one is the only one that counts.
    twin.stop()
    (requests / "0-stale").write_text("shutdown -h now\n")
    twin.start()
    assert ssh(bed.key, twin.public_ip, "sudo reboot").returncode == 0
    wait_for(lambda: bed.shutdowns.count(twin) >= 2, "on_shutdown(twin) again")
    assert bed.shutdowns.count(twin) == 2 and list(requests.iterdir()) == []
    twin.terminate()


def test_stop_then_start(bed):
    twin = bed.create("stop-start")
    private, public = twin.private_ip, twin.public_ip
    started = ssh(bed.key, public, "echo kept > ~/file && setsid -f sleep 300 >/dev/null 2>&1")
    assert started.returncode == 0, started.stderr
    assert len(twin.pids()) >= 2  # sshd and the sleep
    twin.stop()
    assert (twin.state, twin.public_ip, twin.pids()) == ("stopped", None, [])
    addresses = subprocess.run(["ip", "-n", twin.netns, "-4", "-o", "addr"], capture_output=True,
                               text=True, check=True).stdout
    assert f" {private}/" in addresses and f" {public}/" not in addresses
    with pytest.raises(OSError):
        socket.create_connection((public, 22), timeout=0.5).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((private, 22), timeout=5).close()
    twin.stop()  # idempotent
    twin.start()
    assert twin.state == "running" and twin.private_ip == private
    assert twin.public_ip not in (None, public)
    result = ssh(bed.key, twin.public_ip, "cat ~/file; whoami")
    assert result.stdout.split() == ["kept", USER], result.stderr
    twin.terminate()


def test_terminate_leaves_nothing(bed):
    twin = bed.create("gone")
    assert ssh(bed.key, twin.public_ip, "setsid -f sleep 300 >/dev/null 2>&1").returncode == 0
    inode = network.namespace_inode(twin.netns)
    assert twin.netns in namespaces() and twin.veth in bridge_ports(BRIDGE)
    twin.terminate()
    assert twin.state == "terminated" and twin not in bed.host.twins()
    assert twin.netns not in namespaces()
    assert twin.veth not in bridge_ports(BRIDGE)
    assert not os.path.exists(f"/sys/class/net/{twin.veth}")
    assert sandbox.find_processes([], [inode]) == [] and twin.pids() == []
    assert not twin.directory.exists()
    twin.terminate()  # idempotent
    with pytest.raises(TwinError, match="terminated"):
        twin.start()


def test_eight_twins_at_once(bed):
    def timed(name: str) -> tuple[object, float]:
        start = time.monotonic()
        return bed.create(name), time.monotonic() - start

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(timed, [f"many-{i}" for i in range(8)]))
    took = time.monotonic() - start
    twins = [twin for twin, _ in results]
    slowest = max(t for _, t in results)
    print(f"\ncreate: 8 twins from 8 threads in {took * 1000:.0f} ms"
          f" (slowest create {slowest * 1000:.0f} ms)")
    addresses = [t.private_ip for t in twins] + [t.public_ip for t in twins]
    assert len(set(addresses)) == 16
    assert all(banner(address) == b"SSH-2.0" for address in addresses)
    assert set(bed.host.twins()) >= set(twins)
    assert ssh(bed.key, twins[-1].public_ip, "whoami").stdout.strip() == USER
    start = time.monotonic()
    for twin in twins:
        twin.terminate()
    print(f"terminate: 8 twins in {(time.monotonic() - start) * 1000:.0f} ms")


def test_a_bridge_has_one_host_at_a_time(bed, tmp_path):
    with pytest.raises(TwinError, match="in use by another TwinHost"):
        TwinHost(tmp_path / "second", bridge=BRIDGE, subnet="10.218.0.0/16")
    with pytest.raises(TwinError, match="overlaps"):
        TwinHost(tmp_path / "third", bridge="skykfct2", subnet="10.215.7.0/24")
    assert not Path("/sys/class/net/skykfct2").exists()


def test_a_crashed_run_is_swept_and_close_leaves_nothing(tmp_path):
    require_twin_tools()
    key = _keygen(tmp_path / "key")
    crash = textwrap.dedent(f"""\
        import os, sys
        from pathlib import Path
        from fakecloud.twins import TwinHost
        host = TwinHost(Path(sys.argv[1]), bridge={CRASH_BRIDGE!r}, subnet={CRASH_SUBNET!r})
        print(host.create("crashed", None).netns, flush=True)
        os._exit(0)  # a crash: nothing is closed
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    crashed = subprocess.run([sys.executable, "-c", crash, str(tmp_path / "crashed")],
                             capture_output=True, text=True, timeout=60, env=env)
    assert crashed.returncode == 0, crashed.stderr
    left = crashed.stdout.strip()
    inode = network.namespace_inode(left)
    assert inode is not None and sandbox.find_processes([], [inode])  # its sshd lives on

    root = tmp_path / "bed"
    with TwinHost(root, bridge=CRASH_BRIDGE, subnet=CRASH_SUBNET) as host:
        assert left not in namespaces() and sandbox.find_processes([], [inode]) == []
        twin = host.create("poweroff", cloud_config(key.with_suffix(".pub").read_text().strip()))
        # Without an on_shutdown, a shutdown inside stops the twin, as on EC2.
        ssh(key, twin.public_ip, "sudo poweroff")
        wait_for(lambda: twin.state == "stopped", "the twin to stop itself")
        assert twin.pids() == [] and twin.public_ip is None
        netns, twin_inode = twin.netns, network.namespace_inode(twin.netns)
    assert twin.state == "terminated"
    assert [n for n in namespaces() if n.startswith(f"skykfc-{CRASH_BRIDGE}-")] == []
    assert netns not in namespaces() and sandbox.find_processes([], [twin_inode]) == []
    assert not Path(f"/sys/class/net/{CRASH_BRIDGE}").exists()
    assert not root.exists()
    host.close()  # idempotent
