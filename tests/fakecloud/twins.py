"""Node twins: sandboxes on this machine that behave like freshly booted cloud VMs.

The fake clouds of the test bed (moto's EC2 server plus ``fakecloud.ec2``)
answer API calls; a *twin* is what stands behind each instance they report,
so a cloud plugin's whole path (user data, SSH key, login, sudo, autostop)
runs against real OpenSSH, as it would against a cloud.

A twin is, per instance:

* **Its own network namespace** (``skykfc-<bridge>-<n>``) with ``lo`` up and a
  veth pair whose host end is on the host bridge (``skykfc0`` by default,
  holding the subnet's first address). Both of its addresses sit on its
  ``eth0``: a private one (lower half of the subnet, kept for its whole life)
  and a public one (upper half, a new one after every start, never reused).
  This machine reaches a twin on either; twins reach each other on their
  private addresses. There is no default route, NAT or forwarding: a twin
  talks to this machine and to other twins, nothing else.
* **Its own mount namespace**, in which its own files are bound over
  ``/etc/passwd``, ``/etc/group``, ``/etc/shadow`` (this machine's, plus the
  cloud-config users), ``/etc/sudoers.d``, ``/home`` (:attr:`Twin.home_root`),
  ``/tmp``, ``/var/tmp`` and ``/run``, so two twins never share a file; a
  ``/dev/fuse`` every user may open, as on cloud images (bucket mounts); and
  the shutdown shims over ``/usr/local/sbin`` and the real power-off command
  (``/usr/bin/systemctl`` on Debian). Everything else, ``/usr`` included, is
  this machine's: a node command run with sudo that writes outside those
  paths writes this machine.
* **Cloud-init, as far as skyk uses it**: a ``#cloud-config`` user data's
  ``users:`` entries become accounts (uid from 2000 up) with their
  ``ssh_authorized_keys``, ``sudo`` rules and ``shell``. Without a
  cloud-config nobody can log in, as on a cloud image whose key was passed
  wrongly. What was applied, or why not, is in the twin's ``cloud-init.log``.
* **sshd** on port 22 of both addresses (pubkey only, no root login,
  ``StrictModes``), with its own host key; it logs to the twin's
  ``sshd.log``.
* **Shutdown shims**: ``shutdown``, ``poweroff``, ``halt`` and ``reboot``
  inside a twin (autostop runs ``sudo shutdown -h now``) never reach this
  machine. Run as root they leave a request in the twin's directory; the
  host's watcher thread then calls ``on_shutdown(twin)`` (by default the twin
  is stopped, as an EC2 instance is). Run as anyone else they say
  ``Must be root.`` and fail.

The life cycle is EC2's: :meth:`Twin.stop` kills every process and drops
the public address (the files stay), :meth:`Twin.start` gives a new public
address and starts sshd again, :meth:`Twin.terminate` removes everything.
When a test fails, the twin's :attr:`Twin.directory` holds ``sshd.log`` (each
login attempt and why it was refused; the probe that waits for sshd shows as
a connection closed before key exchange) and ``cloud-init.log``, and
``ip netns exec NETNS`` runs a command in its network (not behind its mounts).

A cloud plugin's test bed reuses this by giving each fake instance a twin::

    from fakecloud.twins import TwinHost

    with TwinHost(tmp_path / "twins", on_shutdown=lambda twin: fake_api.stop(twin.name)) as host:
        twin = host.create("i-0123", user_data)      # user data as the plugin sent it, decoded
        report(private_ip=twin.private_ip, public_ip=twin.public_ip)
        ...                                           # twin.stop() / start() / terminate()

Each test bed needs its own bridge and subnet: a bridge is claimed by one
:class:`TwinHost` at a time (per machine), and a new one first sweeps what a
crashed run left on its bridge. Everything needs root, ``ip``, ``unshare``,
``mount``, ``/usr/sbin/sshd`` and ``ssh-keygen``.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from skyk.builtin import local_network as network
from skyk.builtin import local_sandbox as sandbox

log = logging.getLogger(__name__)

#: Every twin's namespace starts with this, then its bridge's name.
NETNS_PREFIX = "skykfc-"
#: Host ends of the twins' veth pairs (the local cloud's are ``skv...``).
VETH_PREFIX = "skf"
SSHD = "/usr/sbin/sshd"
#: How long create() and start() wait for sshd to accept connections.
BOOT_SECONDS = 30.0
#: How often the watcher looks for shutdown requests.
POLL_SECONDS = 0.1
#: The first uid (and gid) of cloud-config users; twins count up from here,
#: skipping ids this machine uses.
FIRST_UID = 2000
#: Accounts of this machine below this uid are system accounts a cloud-config must not replace.
_SYSTEM_UID_END = 1000
#: The commands that power a machine off; each gets a shim.
POWER_COMMANDS = ("shutdown", "poweroff", "halt", "reboot")
#: Where the real ones are; the shim is bound over their resolved targets.
_POWER_DIRS = ("/sbin", "/usr/sbin", "/bin", "/usr/bin")
#: Tools a TwinHost needs on this machine.
_TOOLS = ("ip", "unshare", "mount", "ssh-keygen")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BRIDGE = re.compile(r"[A-Za-z0-9_]{1,15}")
#: What ``useradd`` accepts (Debian's NAME_REGEX, plus a leading underscore).
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

#: The twin's own /run (a directory in its twin directory) holds what sshd
#: and the shims need: its own view of the twin directory may be hidden
#: under the twin's /tmp or /home, which are bound over this machine's.
_TWIN_RUN = "/run/twin"

SSHD_CONFIG = """\
# sshd of node twin {name} (tests/fakecloud/twins.py)
ListenAddress 0.0.0.0
Port 22
HostKey {run}/ssh_host_ed25519_key
PidFile /run/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
PrintMotd no
AcceptEnv LANG LC_*
LogLevel VERBOSE
"""

SHIM = """\
#!/bin/sh
# Node twin {name}'s shutdown, poweroff, halt and reboot (and systemctl): power
# requests go to the test bed (tests/fakecloud/twins.py), never to this machine.
verb=${{0##*/}}
if [ "$verb" = systemctl ]; then
    verb=
    for arg; do
        case $arg in -*) ;; *) verb=$arg; break ;; esac
    done
    case $verb in
        poweroff|halt|reboot|kexec) ;;
        *) echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
           echo "Failed to connect to bus: Host is down" >&2
           exit 1 ;;
    esac
fi
if [ "$(id -u)" != 0 ]; then
    echo "Must be root." >&2
    exit 1
fi
for arg; do
    # A cancelled shutdown: nothing is pending, as every request is acted on at once.
    [ "$arg" = -c ] && exit 0
done
# Written aside and renamed, so the watcher never reads half a request.
request=$(mktemp {requests}/.XXXXXXXX) || exit 1
echo "$verb $*" > "$request"
mv "$request" "{requests}/${{request##*/.}}"
"""


class TwinError(RuntimeError):
    """A twin or the host's network could not be set up, started or removed."""


# -- cloud-init ---------------------------------------------------------------

@dataclass(frozen=True)
class CloudUser:
    """One account of a cloud-config's ``users:`` list."""

    name: str
    ssh_authorized_keys: tuple[str, ...] = ()
    #: sudoers rules, each written as ``NAME RULE``
    sudo: tuple[str, ...] = ()
    shell: str = "/bin/bash"


def parse_cloud_config(user_data: str | None) -> tuple[list[CloudUser], list[str]]:
    """Return the users a cloud-config creates, and notes on what was skipped and why.

    Only ``#cloud-config`` user data counts. ``default`` and unknown keys are
    ignored; an entry that cloud-init would refuse (no or a bad name, a
    malformed key list) is skipped with a note, so the twin boots without
    it, as a VM would.
    """
    if not user_data:
        return [], ["no user data: no users created"]
    if not user_data.lstrip("\ufeff").startswith("#cloud-config"):
        return [], ["user data is not #cloud-config: no users created"]
    try:
        config = yaml.safe_load(user_data)
    except yaml.YAMLError as exc:
        return [], [f"cloud-config is not valid YAML: {exc}"]
    if not isinstance(config, dict) or config.get("users") is None:
        return [], ["cloud-config has no users: no users created"]
    entries = config["users"]
    if isinstance(entries, str):  # cloud-init also takes "default, name"
        entries = [e.strip() for e in entries.split(",") if e.strip()]
    if not isinstance(entries, list):
        return [], [f"cloud-config users: is a {type(entries).__name__}, not a list"]
    users: list[CloudUser] = []
    notes: list[str] = []
    for entry in entries:
        if entry == "default":
            continue
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            notes.append(f"users: entry {entry!r} skipped: not a name or a mapping")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not _USER.fullmatch(name):
            notes.append(f"users: entry skipped: bad or missing name {name!r}")
            continue
        keys = entry.get("ssh_authorized_keys", entry.get("ssh-authorized-keys", []))
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            notes.append(f"user {name} skipped: ssh_authorized_keys is not a list of strings")
            continue
        sudo = entry.get("sudo")
        if isinstance(sudo, str):
            sudo = [sudo]
        elif not isinstance(sudo, list):  # None, False: no sudo
            sudo = []
        shell = entry.get("shell") or "/bin/bash"
        # A newline would add a sudoers or passwd line of its own.
        if any("\n" in s for s in [*keys, *sudo, str(shell)]):
            notes.append(f"user {name} skipped: a key, sudo rule or shell spans lines")
            continue
        users.append(CloudUser(name, tuple(k.strip() for k in keys if k.strip()),
                               tuple(str(r) for r in sudo if r), str(shell)))
    return users, notes


def _read_table(path: str) -> list[list[str]]:
    return [line.split(":") for line in Path(path).read_text().splitlines() if line.strip()]


def _write_accounts(directory: Path, home_root: Path, user_data: str | None) -> None:
    """Apply the cloud-config: the twin's passwd, group, shadow, sudoers.d and homes."""
    users, notes = parse_cloud_config(user_data)
    passwd, group, shadow = (_read_table(f"/etc/{f}") for f in ("passwd", "group", "shadow"))
    system = {row[0] for row in passwd if int(row[2]) < _SYSTEM_UID_END or row[0] == "nobody"}
    system |= {row[0] for row in group if int(row[2]) < _SYSTEM_UID_END or row[0] == "nogroup"}
    taken = {int(row[2]) for row in passwd} | {int(row[2]) for row in group}
    next_id = FIRST_UID
    today = int(time.time() // 86400)
    rules, created = [], []
    for user in users:
        if user.name in system or user.name in created:
            notes.append(f"user {user.name} skipped: a system account, or listed twice")
            continue
        # A regular account of this machine with that name is replaced, as the
        # twin is a fresh VM that never had it.
        passwd = [r for r in passwd if r[0] != user.name]
        group = [r for r in group if r[0] != user.name]
        shadow = [r for r in shadow if r[0] != user.name]
        while next_id in taken:
            next_id += 1
        uid = next_id
        taken.add(uid)
        passwd.append([user.name, "x", str(uid), str(uid), "", f"/home/{user.name}", user.shell])
        group.append([user.name, "x", str(uid), ""])
        # '*', not '!': without PAM, sshd refuses a locked ('!') account even
        # for keys. A last change of today: 0 would make PAM (sudo) demand a new password.
        shadow.append([user.name, "*", str(today), "0", "99999", "7", "", "", ""])
        rules += [f"{user.name} {rule}" for rule in user.sudo]
        _make_home(home_root / user.name, uid, user.ssh_authorized_keys)
        created.append(user.name)
        notes.append(f"user {user.name}: uid {uid}, {len(user.ssh_authorized_keys)} key(s),"
                     f" {len(user.sudo)} sudo rule(s), shell {user.shell}")
    etc = directory / "etc"
    for name, rows, mode in (("passwd", passwd, 0o644), ("group", group, 0o644),
                             ("shadow", shadow, 0o640)):
        path = etc / name
        path.write_text("".join(":".join(row) + "\n" for row in rows))
        path.chmod(mode)
    with contextlib.suppress(KeyError):
        os.chown(etc / "shadow", 0, grp.getgrnam("shadow").gr_gid)
    if rules:
        # sudo ignores a file in sudoers.d that is not root's and 0440 or stricter.
        sudoers = etc / "sudoers.d" / "90-cloud-init-users"
        sudoers.write_text("# Created by the node twin's cloud-init\n" + "\n".join(rules) + "\n")
        sudoers.chmod(0o440)
    (directory / "cloud-init.log").write_text("".join(f"{note}\n" for note in notes))


def _make_fuse_device(path: Path) -> None:
    """Make a twin's own /dev/fuse, usable by every user, as on cloud images.

    This machine's may be root's alone (0600); the twin's node user mounts
    buckets with rclone through it. The same device, only its own node's mode.
    """
    try:
        device = os.stat("/dev/fuse").st_rdev
        os.mknod(path, 0o666 | stat.S_IFCHR, device)
        path.chmod(0o666)
    except OSError:
        pass  # no FUSE here: the bind is skipped (see _mounts) and mounts fail as on such a VM


def _make_home(home: Path, uid: int, keys: Iterable[str]) -> None:
    """Create a user's home from /etc/skel, with its authorized_keys, all owned by it."""
    if Path("/etc/skel").is_dir():
        shutil.copytree("/etc/skel", home, symlinks=True)
    else:
        home.mkdir()
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    authorized = ssh / "authorized_keys"
    authorized.write_text("".join(f"{key}\n" for key in keys))
    # StrictModes: sshd ignores keys that others could write or read.
    authorized.chmod(0o600)
    home.chmod(0o750)
    for path in [home, *home.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)


# -- twins --------------------------------------------------------------------

class Twin:
    """One fake instance: a namespace with its own addresses, files, users and sshd.

    Create twins with :meth:`TwinHost.create`. Every method is idempotent and
    safe to call from any thread.
    """

    name: str
    #: kept for the twin's whole life, like an EC2 private IP
    private_ip: str
    #: None while stopped; a new one after each start, never reused
    public_ip: str | None
    #: "running", "stopped" or "terminated"
    state: str
    #: the directory mounted at /home inside the twin
    home_root: Path
    #: the twin's directory on this machine: its files, sshd.log, cloud-init.log
    directory: Path
    #: its network namespace (``ip netns exec NETNS ...`` runs a command beside its sshd)
    netns: str
    #: the host end of its veth pair, on the bridge
    veth: str

    def __init__(self, host: TwinHost, name: str, seq: int, private_ip: str) -> None:
        self.name = name
        self.private_ip = private_ip
        self.public_ip = None
        self.state = "stopped"
        self.directory = host.root / name
        self.home_root = self.directory / "home"
        self.netns = f"{host.netns_prefix}{seq}"
        self._host = host
        # A fresh veth name per TwinHost and twin: a pair whose namespace was
        # deleted may still be dying in the kernel ("File exists").
        self.veth = network.veth_name(f"{self.netns}-{time.time_ns()}", VETH_PREFIX)
        self._lock = threading.RLock()
        self._sshd: subprocess.Popen | None = None
        #: create() returned it: twins() lists it from then on
        self._booted = False

    def __repr__(self) -> str:
        return (f"Twin({self.name!r}, {self.state}, private={self.private_ip},"
                f" public={self.public_ip}, netns={self.netns})")

    @property
    def _requests(self) -> Path:
        """Where the shims leave shutdown requests (the twin's /run/twin/shutdown)."""
        return self.directory / "run" / "twin" / "shutdown"

    def stop(self) -> None:
        """Kill every process of the twin and drop its public address; its files persist."""
        with self._lock:
            if self.state != "running":
                return
            self._kill()
            with contextlib.suppress(network.NetworkError):
                network.ip_batch([f"addr del {self.public_ip}/{self._host.subnet.prefixlen}"
                                  " dev eth0"], netns=self.netns)
            self._clear_requests()
            # Stopped only now: 'ip -n' above ran in the namespace, and a caller
            # that sees "stopped" must find no process there.
            self.public_ip = None
            self.state = "stopped"

    def start(self) -> None:
        """Start a stopped twin: a new public address, and sshd with its mounts again.

        Users made by the cloud-config persist (cloud-init runs on the first
        boot only). Raises TwinError, leaving the twin stopped, if sshd does
        not come up.
        """
        with self._lock:
            if self.state == "terminated":
                raise TwinError(f"twin {self.name} is terminated and cannot start")
            if self.state == "running":
                return
            self._clear_requests()
            public = self._host._next_public()
            network.ip_batch([f"addr add {public}/{self._host.subnet.prefixlen} dev eth0"],
                             netns=self.netns)
            self.public_ip = public
            try:
                self._start_sshd()
            except BaseException:
                self._kill()
                self.public_ip = None
                with contextlib.suppress(network.NetworkError):
                    network.ip_batch([f"addr del {public}/{self._host.subnet.prefixlen} dev eth0"],
                                     netns=self.netns)
                raise
            self.state = "running"

    def terminate(self) -> None:
        """Remove the twin: its processes, namespace, veth pair, addresses and directory."""
        with self._lock:
            if self.state == "terminated":
                return
            self._destroy()
            self.state = "terminated"
            self.public_ip = None
        self._host._forget(self)

    def pids(self) -> list[int]:
        """Return the pids of the processes running in the twin (found by namespace inode).

        That is sshd and everything started through it, and any other process
        that entered the twin's network namespace.
        """
        inode = network.namespace_inode(self.netns)
        return sandbox.find_processes([], [inode]) if inode is not None else []

    # -- inside ---------------------------------------------------------------

    def _boot(self, user_data: str | None) -> None:
        """Make the twin's files, namespace and addresses, apply the cloud-config, start sshd."""
        d = self.directory
        # No live twin has this name (create() checked): anything there is a crashed run's.
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(mode=0o755)
        for sub, mode in (("home", 0o755), ("tmp", 0o1777), ("var-tmp", 0o1777), ("etc", 0o755),
                          ("etc/sudoers.d", 0o755), ("sbin", 0o755), ("run", 0o755),
                          ("run/sshd", 0o755), ("run/lock", 0o1777), ("run/twin", 0o700),
                          ("run/twin/shutdown", 0o700)):
            (d / sub).mkdir()
            (d / sub).chmod(mode)  # past the umask: 1777 and 0755 are what a VM has
        _make_fuse_device(d / "fuse")
        keygen = subprocess.Popen(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}",
             "-f", str(d / "run" / "twin" / "ssh_host_ed25519_key")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:  # while the host key is made
            _write_accounts(d, self.home_root, user_data)
            shim = SHIM.format(name=self.name, requests=f"{_TWIN_RUN}/shutdown")
            for command in POWER_COMMANDS:
                (d / "sbin" / command).write_text(shim)
                (d / "sbin" / command).chmod(0o755)
            (d / "run" / "twin" / "sshd_config").write_text(self._sshd_config())
            host = self._host
            network.add_namespaces([{"netns": self.netns, "veth": self.veth,
                                     "address": self.private_ip}],
                                   host.subnet, bridge=host.bridge, default_route=False)
        finally:
            _, err = keygen.communicate(timeout=60)
        if keygen.returncode != 0:
            raise TwinError(f"ssh-keygen for twin {self.name} failed: {err.strip()}")
        self.start()

    def _sshd_config(self) -> str:
        config = SSHD_CONFIG.format(name=self.name, run=_TWIN_RUN)
        for sftp in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server"):
            if os.path.exists(sftp):
                # scp speaks SFTP since OpenSSH 9.0.
                config += f"Subsystem sftp {sftp}\n"
                break
        return config

    def _mounts(self) -> list[tuple[Path, str]]:
        """Return (source on this machine, target inside) of every bind mount, in order."""
        d = self.directory
        mounts = [(d / "etc" / "passwd", "/etc/passwd"), (d / "etc" / "group", "/etc/group"),
                  (d / "etc" / "shadow", "/etc/shadow"), (d / "etc" / "sudoers.d", "/etc/sudoers.d"),
                  (d / "sbin", "/usr/local/sbin")]
        mounts += [(d / "sbin" / "shutdown", target) for target in self._host.power_targets]
        mounts += [(d / "home", "/home"), (d / "var-tmp", "/var/tmp"), (d / "tmp", "/tmp"),
                   (d / "run", "/run")]
        if (d / "fuse").exists():
            mounts.append((d / "fuse", "/dev/fuse"))
        mounts = [(src, dst) for src, dst in mounts if os.path.lexists(dst)]
        # A mount over a directory that holds the twin directory (/tmp, for a
        # pytest tmp_path) hides every source below it: those go last.
        return sorted(mounts, key=lambda m: d.is_relative_to(m[1]))

    def _start_sshd(self) -> None:
        """Start sshd in the twin's namespaces, behind its mounts; return once it accepts."""
        script = "set -e\n" + "".join(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}\n"
                                      for src, dst in self._mounts())
        script += f"exec {SSHD} -D -e -f {_TWIN_RUN}/sshd_config\n"
        log_path = self.directory / "sshd.log"
        with open(log_path, "ab") as log_file:
            # ip netns exec and unshare exec (no fork), so the process is sshd itself.
            self._sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
                 "private", "--", "sh", "-c", script],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True)
        deadline = time.monotonic() + BOOT_SECONDS
        while not _accepts(self.private_ip, 22):
            if self._sshd.poll() is not None:
                raise TwinError(f"sshd of twin {self.name} exited with {self._sshd.returncode}:"
                                f" {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TwinError(f"sshd of twin {self.name} did not accept connections on"
                                f" {self.private_ip}:22 in {BOOT_SECONDS:g}s: {_tail(log_path)}")
            time.sleep(0.005)

    def _kill(self) -> None:
        inode = network.namespace_inode(self.netns)
        if inode is not None:
            sandbox.kill_processes([], [inode])
        if self._sshd is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._sshd.wait(5)  # reap it: no zombie
            self._sshd = None

    def _clear_requests(self) -> None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._requests):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def _destroy(self) -> None:
        """Remove whatever exists of the twin; each step tolerates what is already gone."""
        self._kill()
        # The veth first, explicitly: that is synchronous, whereas deleting the
        # namespace destroys its pair in the background.
        if os.path.exists(f"/sys/class/net/{self.veth}"):
            with contextlib.suppress(network.NetworkError):
                network.ip_batch([f"link del {self.veth}"])
        try:
            network.delete_namespaces([self.netns])
        except network.NetworkError as exc:
            raise TwinError(f"twin {self.name}: {exc}") from exc
        if os.path.exists(f"/sys/class/net/{self.veth}"):
            raise TwinError(f"twin {self.name}: could not delete veth {self.veth}")
        shutil.rmtree(self.directory, ignore_errors=True)


class TwinHost:
    """All twins of one test bed: a bridge, an address pool, a root directory, a shutdown watcher.

    ``on_shutdown(twin)`` is called from the watcher thread once for each
    shutdown, poweroff, halt or reboot run as root in a running twin; by
    default the twin is stopped. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, root: Path, *, bridge: str = "skykfc0", subnet: str = "10.214.0.0/16",
                 on_shutdown: Callable[[Twin], None] | None = None) -> None:
        if not _BRIDGE.fullmatch(bridge):
            raise ValueError(f"bridge name {bridge!r}: 1 to 15 letters, digits or _")
        net = ipaddress.ip_network(subnet)
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 28:
            raise ValueError(f"subnet {subnet!r} must be an IPv4 subnet of /28 or larger")
        missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
        missing += [] if os.access(SSHD, os.X_OK) else [SSHD]
        if os.geteuid() != 0 or missing:
            raise TwinError("node twins need root, iproute2, util-linux and OpenSSH"
                            + (f"; missing: {', '.join(missing)}" if missing else "; not root"))
        self.root = Path(root)
        self.bridge = bridge
        self.subnet = net
        self.netns_prefix = f"{NETNS_PREFIX}{bridge}-"
        #: Files the power-off shim is bound over inside each twin.
        self.power_targets = _power_targets()
        #: Called from the watcher thread for each shutdown request; None stops the twin.
        #: A fake cloud may set it after construction (FakeEC2 does).
        self.on_shutdown = on_shutdown
        self._lock = threading.Lock()
        self._twins: list[Twin] = []
        self._seq = 0
        half = net.num_addresses // 2
        # Private addresses count up from .2 (.1 is the bridge) in the lower
        # half; public ones through the upper half, short of the broadcast
        # address. Neither ends in .0 or .255, which tools that assume a /24 mistrust.
        base = int(net.network_address)
        self._private = (i for i in range(2, half) if (base + i) % 256 not in (0, 255))
        self._public = (i for i in range(half, net.num_addresses - 1)
                        if (base + i) % 256 not in (0, 255))
        self._closed = threading.Event()
        self._claim = _claim_bridge(bridge)
        try:
            self._sweep()
            _check_subnet_free(net, bridge)
            network.ensure_bridge(net, bridge, share_uplink=False)
            _allow_bridged(bridge, True)
            self.root.mkdir(parents=True, exist_ok=True)
        except BaseException:
            with contextlib.suppress(Exception):
                self._sweep()
            self._claim.close()
            raise
        self._watcher = threading.Thread(target=self._watch, name=f"twins-{bridge}-shutdown",
                                         daemon=True)
        self._watcher.start()

    def __enter__(self) -> TwinHost:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def create(self, name: str, user_data: str | None) -> Twin:
        """Boot a twin: namespace, private and public address, cloud-config applied, sshd on port 22.

        Returns once sshd accepts TCP connections on the private address;
        raises TwinError (after removing what was made) if it does not within
        :data:`BOOT_SECONDS`. Thread-safe: several twins may boot at once.
        """
        if not _NAME.fullmatch(name):
            raise ValueError(f"twin name {name!r}: letters, digits, '_', '.', '-', up to 64")
        if isinstance(user_data, bytes):
            user_data = user_data.decode("utf-8", "replace")
        with self._lock:
            if self._closed.is_set():
                raise TwinError("this TwinHost is closed")
            if any(t.name == name for t in self._twins):
                raise ValueError(f"a twin named {name!r} exists already")
            self._seq += 1
            twin = Twin(self, name, self._seq, self._take(self._private, "private"))
            self._twins.append(twin)
            # Held while booting: close() or terminate() from another thread waits for it.
            twin._lock.acquire()
        try:
            try:
                twin._boot(user_data)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    twin.terminate()
                if isinstance(exc, (OSError, network.NetworkError, subprocess.SubprocessError)):
                    raise TwinError(f"could not create twin {name}: {exc}") from exc
                raise
            twin._booted = True
        finally:
            twin._lock.release()
        return twin

    def twins(self) -> list[Twin]:
        """Return the live (created and not terminated) twins."""
        with self._lock:
            return [t for t in self._twins if t._booted and t.state != "terminated"]

    def close(self) -> None:
        """Terminate every twin and remove the bridge and the root directory; idempotent."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            twins = list(self._twins)
        if threading.current_thread() is not self._watcher:  # on_shutdown may close the host
            self._watcher.join()
        errors = []
        for twin in twins:
            try:
                twin.terminate()
            except TwinError as exc:
                errors.append(str(exc))
        try:
            self._sweep()
        except TwinError as exc:
            errors.append(str(exc))
        shutil.rmtree(self.root, ignore_errors=True)
        self._claim.close()
        if errors:
            raise TwinError("; ".join(errors))

    # -- internals ------------------------------------------------------------

    def _take(self, pool, kind: str) -> str:
        offset = next(pool, None)
        if offset is None:
            raise TwinError(f"no {kind} address left in {self.subnet}")
        return str(self.subnet.network_address + offset)

    def _next_public(self) -> str:
        with self._lock:
            return self._take(self._public, "public")

    def _forget(self, twin: Twin) -> None:
        with self._lock:
            if twin in self._twins:
                self._twins.remove(twin)

    def _sweep(self) -> None:
        """Remove this bridge's namespaces (and their processes), veths and the bridge itself.

        At start that is what a crashed earlier run left; at close, whatever a
        failed terminate left.
        """
        names = network.namespaces_starting(self.netns_prefix)
        inodes = [i for i in map(network.namespace_inode, names) if i is not None]
        if inodes:
            sandbox.kill_processes([], inodes, grace=0.5)
        brif = Path(f"/sys/class/net/{self.bridge}/brif")
        ports = sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []
        deletions = [f"link del {port}" for port in ports]
        if Path(f"/sys/class/net/{self.bridge}").exists():
            deletions.append(f"link del {self.bridge}")
        if deletions:
            with contextlib.suppress(network.NetworkError):
                network.ip_batch(deletions, force=True)
        try:
            network.delete_namespaces(names)
        except network.NetworkError as exc:
            raise TwinError(str(exc)) from exc
        if Path(f"/sys/class/net/{self.bridge}").exists():
            raise TwinError(f"could not delete the bridge {self.bridge}")
        _allow_bridged(self.bridge, False)

    def _watch(self) -> None:
        """Turn the shims' shutdown requests into on_shutdown calls, until close()."""
        while not self._closed.wait(POLL_SECONDS):
            for twin in self.twins():
                if twin.state != "running":
                    continue
                try:
                    requests = sorted(e.name for e in os.scandir(twin._requests)
                                      if not e.name.startswith("."))
                except OSError:  # terminated meanwhile
                    continue
                for request in requests:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(twin._requests / request)
                        # Not for a twin stopped or terminated since: its
                        # requests died with it, as on a powered-off VM.
                        if twin.state == "running":
                            self._call_on_shutdown(twin)

    def _call_on_shutdown(self, twin: Twin) -> None:
        try:
            (self.on_shutdown or Twin.stop)(twin)
        except Exception:
            log.exception("on_shutdown(%s) failed", twin.name)


def require_twin_tools() -> None:
    """Skip the calling test without what twins need (root, iproute2, util-linux, OpenSSH, sudo);
    fail it instead when ``CI`` is set, where a missing tool is a broken set-up."""
    from .tools import missing_tool

    missing = [tool for tool in ("ip", "unshare", "ssh", "ssh-keygen", "sudo") if shutil.which(tool) is None]
    missing += [] if os.access(SSHD, os.X_OK) else [SSHD]
    if os.geteuid() == 0 and not missing:
        return
    message = "node twins need root, iproute2, util-linux, OpenSSH and sudo"
    missing_tool(message + (f" (missing: {', '.join(missing)})" if missing else " (not root)"))


def ssh_to_twin(key: Path, address: str, command: str, user: str,
                timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``command`` as ``user`` on a twin at ``address`` with the real ssh client, as a user of
    the cloud would log in: that key only, no ssh config or agent of this machine."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
         f"{user}@{address}", command],
        capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def _power_targets() -> list[str]:
    """Return the real files behind shutdown, poweroff, halt and reboot (systemctl on Debian)."""
    targets = set()
    for directory in _POWER_DIRS:
        for command in POWER_COMMANDS:
            path = os.path.realpath(os.path.join(directory, command))
            # /usr/local/sbin is the shim directory already.
            if os.path.isfile(path) and not path.startswith("/usr/local/"):
                targets.add(path)
    return sorted(targets)


def _claim_bridge(bridge: str) -> socket.socket:
    """Claim ``bridge`` for this TwinHost until the returned socket is closed.

    An abstract Unix socket: the kernel frees its name when the process
    dies, so a crashed run never blocks the next, and it leaves no file.
    """
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0skyk-twinhost-{bridge}")
    except OSError:
        claim.close()
        raise TwinError(f"bridge {bridge} is in use by another TwinHost (in this or another"
                        f" process; `ss -xlp | grep skyk-twinhost` shows which); give each test"
                        f" bed its own bridge= and subnet=") from None
    return claim


def _check_subnet_free(subnet: ipaddress.IPv4Network, bridge: str) -> None:
    """Raise TwinError if another interface of this machine has an address in ``subnet``."""
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                           timeout=30).stdout
    for line in shown.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[1] == bridge:
            continue
        address = ipaddress.ip_interface(fields[3])
        if address.network.overlaps(subnet):
            raise TwinError(f"subnet {subnet} overlaps {address} on {fields[1]}; give the"
                            f" TwinHost another subnet=")


def _allow_bridged(bridge: str, allow: bool) -> None:
    """Let twins on ``bridge`` reach each other where br_netfilter sends bridged frames to iptables.

    Docker loads br_netfilter and sets FORWARD to DROP, which would drop
    twin-to-twin traffic. Only traffic from the bridge back to the bridge is
    let through: no twin gets a route out. Best effort, never fails.
    """
    iptables = shutil.which("iptables")
    try:
        if not iptables or Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() != "1":
            return
        rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        present = subprocess.run([iptables, "-w", "-C", *rule], capture_output=True,
                                 timeout=10).returncode == 0
        if allow and not present:
            subprocess.run([iptables, "-w", "-I", *rule], capture_output=True, timeout=10)
        elif not allow and present:
            subprocess.run([iptables, "-w", "-D", *rule], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(no log)"
    except OSError:
        return "(no log)"
