"""The agent's bucket mounts on a real node home, against the store emulators.

Each test drives ``mount`` and ``unmount`` through :class:`AgentClient` over a
:class:`LocalRunner` sandbox, with the node access the plugins' stores give,
and checks the objects with the same stores. They need rclone, FUSE
(``/dev/fuse`` and ``fusermount3``) and the emulators; without them they
skip, except under ``CI``, where they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from fakecloud import Azurite, FakeGCS, FakeS3
from fakecloud import azurite as azurite_module
from fakecloud.tools import missing_tool
from lifecycle_helpers import wait_for
from skyk.agent import mountns
from skyk.agent.client import AgentClient, AgentError
from skyk.agent.runners import NODE_MARKER, LocalRunner
from skyk.plugins.manager import Kernel
from skyk.storage.store import BucketRef, Store


def _need(ok: bool, what: str) -> None:
    if not ok:
        missing_tool(f"{what} (CI installs it)")


@pytest.fixture(scope="module", autouse=True)
def fuse_and_rclone():
    _need(shutil.which("rclone") is not None, "rclone is not installed")
    _need(shutil.which("fusermount3") is not None, "fusermount3 is not installed")
    _need(os.access("/dev/fuse", os.R_OK | os.W_OK), "/dev/fuse is not usable")


class Node:
    """A node home with the agent installed, driven as the CLI drives it."""

    def __init__(self, root: Path) -> None:
        self.home = root / "node"
        self.home.mkdir(parents=True)
        self.marker = f"test-mounts-{uuid.uuid4().hex[:8]}"
        self.runner = LocalRunner(home=str(self.home), marker=self.marker)
        self.client = AgentClient(self.runner, timeout=120)
        self.client.install()

    def records(self) -> list[dict]:
        path = self.home / ".skyk/mounts.json"
        return json.loads(path.read_text())["mounts"] if path.exists() else []

    def teardown(self) -> None:
        """Undo whatever a failing test left: lazy-unmount every FUSE mount under the home, kill rclone."""
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(str(self.home)):
                subprocess.run(["fusermount3", "-uz", point], capture_output=True)
        needle = f"{NODE_MARKER}={self.marker}\0".encode()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if needle in Path(entry.path, "environ").read_bytes():
                        os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass


def cluster_info(nodes: list[Node], autostop: str | None = None) -> dict:
    """The ``cluster.json`` of a cluster of ``nodes``, head first; ``autostop`` is its stop command."""
    return {"cluster": "mounts", "cloud": "local", "region": "local", "zone": None,
            "instance_type": "local", "num_nodes": len(nodes), "num_gpus_per_node": 0,
            "node_ips": [f"10.0.0.{rank + 1}" for rank in range(len(nodes))],
            "runners": [n.runner.spec() for n in nodes], "autostop": {"stop": autostop, "down": None}}


@pytest.fixture
def node(tmp_path):
    made = Node(tmp_path)
    yield made
    made.teardown()


def spec(store: Store, bucket: str, *mounts: tuple[str, str, str]) -> dict:
    """A ``mount`` spec for ``store``: each mount is (dest, path in the bucket or '', mode)."""
    return {"remotes": {store.name: store.node_access(bucket).as_json()},
            "mounts": [{"dest": dest, "remote": store.name,
                        "path": f"{bucket}/{prefix}" if prefix else bucket, "mode": mode}
                       for dest, prefix, mode in mounts]}


def _has_azurite() -> bool:
    return importlib.util.find_spec("azure.storage.blob") is not None and azurite_module.program() is not None


#: each store's emulator, and whether what it needs is installed
EMULATORS = {
    "s3": (FakeS3, lambda: True, "moto"),
    "gcs": (FakeGCS, lambda: importlib.util.find_spec("gcp_storage_emulator") is not None,
            "gcp-storage-emulator"),
    "azure": (Azurite, _has_azurite, "azurite-blob and azure-storage-blob"),
}


@pytest.fixture(scope="module")
def emulators():
    """Start each store's emulator the first time a test of the module asks for it; stop them all after."""
    with contextlib.ExitStack() as stack:
        running: dict[str, object] = {}

        def get(name: str):
            if name not in running:
                kind, installed, what = EMULATORS[name]
                _need(installed(), f"{what} is not installed")
                running[name] = stack.enter_context(kind())
            return running[name]

        yield get


def _store_at(monkeypatch, emulators, name: str) -> Store:
    """The plugin's store ``name``, pointed at its emulator as a user would: by the environment."""
    for key in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "SKYK_AZURE_SAS_DAYS"):
        monkeypatch.delenv(key, raising=False)  # they would name another account than Azurite's
    for key, value in emulators(name).env().items():
        monkeypatch.setenv(key, value)
    return Kernel.load(("cloud",)).stores()[name]


@pytest.fixture
def s3(monkeypatch, emulators) -> Store:
    return _store_at(monkeypatch, emulators, "s3")


@pytest.fixture
def gcs(monkeypatch, emulators) -> Store:
    return _store_at(monkeypatch, emulators, "gcs")


@pytest.fixture
def azure(monkeypatch, emulators) -> Store:
    return _store_at(monkeypatch, emulators, "azure")


def new_bucket(store: Store, tmp_path: Path, files: dict[str, bytes] | None = None) -> str:
    name = f"skyk-mounts-{secrets.token_hex(4)}"
    store.create(name, None)
    if files:
        source = tmp_path / f"upload-{name}"
        for key, content in files.items():
            (source / key).parent.mkdir(parents=True, exist_ok=True)
            (source / key).write_bytes(content)
        store.upload(source, BucketRef(store.name, name))
    return name


def mounted(path: Path) -> bool:
    return os.path.ismount(path)


# --- S3: MOUNT ---------------------------------------------------------------------------------

def test_s3_mount_reads_and_writes_and_unmount_flushes(node, s3, tmp_path):
    bucket = new_bucket(s3, tmp_path, {"in/weights.bin": b"\x00\x01" * 500})
    answer = node.client.mount(spec(s3, bucket, ("~/data", "", "MOUNT")))
    data = node.home / "data"
    assert answer == {"mounted": [str(data)], "copied": []}
    assert mounted(data)
    assert (data / "in/weights.bin").read_bytes() == b"\x00\x01" * 500
    (data / "out").mkdir()
    (data / "out/result.txt").write_text("written on a node")
    assert node.client.unmount() == {"unmounted": [str(data)], "errors": []}
    assert not mounted(data)
    assert node.records() == []
    ref = BucketRef("s3", bucket)
    assert s3.list_objects(ref) == ["in/weights.bin", "out/result.txt"]
    assert s3.read_object(ref, "out/result.txt") == b"written on a node"


def test_a_write_still_dirty_is_uploaded_before_unmount(node, s3, tmp_path):
    # Unmount is called the moment the file is closed, before rclone's
    # write-back delay has passed: unmounting then would lose the file.
    bucket = new_bucket(s3, tmp_path)
    node.client.mount(spec(s3, bucket, ("~/out", "run1", "MOUNT")))
    payload = os.urandom(3 * 1024 * 1024)
    with open(node.home / "out/big.bin", "wb") as f:
        f.write(payload)
    node.client.unmount()
    assert s3.read_object(BucketRef("s3", bucket, "run1"), "big.bin") == payload


def test_mounting_twice_leaves_the_mount_as_it_is(node, s3, tmp_path):
    bucket = new_bucket(s3, tmp_path, {"a.txt": b"alpha"})
    the_spec = spec(s3, bucket, ("~/data", "", "MOUNT"))
    node.client.mount(the_spec)
    first = node.records()
    assert node.client.mount(the_spec) == {"mounted": [str(node.home / "data")], "copied": []}
    assert node.records() == first  # the same rclone, not a second one
    assert (node.home / "data/a.txt").read_text() == "alpha"
    node.client.unmount()
    assert not mounted(node.home / "data")


def test_a_bucket_that_does_not_exist_is_one_clear_error_and_nothing_stays_mounted(node, s3, tmp_path):
    bucket = new_bucket(s3, tmp_path)
    the_spec = spec(s3, bucket, ("~/ok", "", "MOUNT"), ("~/missing", "", "MOUNT"))
    the_spec["mounts"][1]["path"] = "skyk-no-such-bucket"
    with pytest.raises(AgentError) as caught:
        node.client.mount(the_spec)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert "s3:skyk-no-such-bucket" in message and "does not exist" in message
    assert not mounted(node.home / "ok") and not mounted(node.home / "missing")
    assert node.records() == [] and not (node.home / ".skyk/rclone/rclone.conf").exists()
    answer = node.runner.run(f"PYTHONPATH=$HOME/.skyk/agent {node.runner.python} -m skyk_agent mount",
                             input=json.dumps(the_spec))
    assert answer.returncode == 1 and answer.stderr.count("\n") == 1


def test_no_secret_on_rclones_command_line_or_in_its_log_and_files_are_private(node, s3, tmp_path):
    bucket = new_bucket(s3, tmp_path, {"a.txt": b"alpha"})
    the_spec = spec(s3, bucket, ("~/data", "", "MOUNT"))
    secret = the_spec["remotes"]["s3"]["remote"]["secret_access_key"]
    node.client.mount(the_spec)
    (node.home / "data/b.txt").write_text("beta")
    record = node.records()[0]
    cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes()
    assert b"rclone" in cmdline and secret.encode() not in cmdline
    rclone_dir = node.home / ".skyk/rclone"
    for path in [rclone_dir, *rclone_dir.glob("*"), node.home / ".skyk/mounts.json"]:
        if path.is_dir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
        else:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert secret in (rclone_dir / "rclone.conf").read_text()
    node.client.unmount()
    assert not (rclone_dir / "rclone.conf").exists()  # nothing mounted: no credentials kept
    log = Path(record["log"]).read_text()
    assert secret not in log
    assert s3.read_object(BucketRef("s3", bucket), "b.txt") == b"beta"


def test_unmount_with_nothing_mounted_is_fine(node):
    assert node.client.unmount() == {"unmounted": [], "errors": []}
    assert node.client.unmount() == {"unmounted": [], "errors": []}


def test_a_malformed_spec_is_one_line(node):
    for bad in ({"mounts": "x"}, {"remotes": {}, "mounts": [{"dest": "rel", "remote": "s3",
                                                            "path": "b", "mode": "MOUNT"}]},
                {"remotes": {"s3": {"remote": {"type": "s3\nextra = 1"}}},
                 "mounts": [{"dest": "~/d", "remote": "s3", "path": "b", "mode": "MOUNT"}]}):
        with pytest.raises(AgentError) as caught:
            node.client.mount(bad)
        assert "\n" not in str(caught.value) and str(caught.value).startswith("mount: ")


# --- GCS: COPY -----------------------------------------------------------------------------------

def test_gcs_copy_downloads_the_prefix(node, gcs, tmp_path):
    bucket = new_bucket(gcs, tmp_path, {"ckpt/a.txt": b"alpha", "ckpt/sub/b.txt": b"beta",
                                        "other.txt": b"no"})
    answer = node.client.mount(spec(gcs, bucket, ("~/ckpt", "ckpt", "COPY")))
    dest = node.home / "ckpt"
    assert answer == {"mounted": [], "copied": [str(dest)]}
    assert not mounted(dest)
    assert (dest / "a.txt").read_text() == "alpha" and (dest / "sub/b.txt").read_text() == "beta"
    assert not (dest / "other.txt").exists()
    key_files = list((node.home / ".skyk/rclone/gcs").glob("*"))
    assert key_files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in key_files)
    assert node.client.unmount() == {"unmounted": [], "errors": []}
    assert not any(p.exists() for p in key_files) and not (node.home / ".skyk/rclone/rclone.conf").exists()


# --- Azure: MOUNT_CACHED -------------------------------------------------------------------------

def test_azure_mount_cached_write_is_flushed_on_unmount(node, azure, tmp_path):
    bucket = new_bucket(azure, tmp_path, {"in/a.txt": b"alpha"})
    the_spec = spec(azure, bucket, ("/" + str(node.home / "cached").lstrip("/"), "", "MOUNT_CACHED"))
    sas = the_spec["remotes"]["azure"]["remote"]["sas_url"]
    node.client.mount(the_spec)
    dest = node.home / "cached"
    assert (dest / "in/a.txt").read_text() == "alpha"
    (dest / "out").mkdir()
    (dest / "out/result.txt").write_text("cached write")
    record = node.records()[0]
    assert record["mode"] == "MOUNT_CACHED"
    assert sas.split("?", 1)[1].encode() not in Path(f"/proc/{record['pid']}/cmdline").read_bytes()
    assert node.client.unmount()["unmounted"] == [str(dest)]
    assert not mounted(dest)
    assert sas.split("?", 1)[1] not in Path(record["log"]).read_text()
    ref = BucketRef("azure", bucket)
    assert azure.list_objects(ref) == ["in/a.txt", "out/result.txt"]
    assert azure.read_object(ref, "out/result.txt") == b"cached write"


def test_a_flush_that_times_out_leaves_the_mount_in_place(node, s3, tmp_path, monkeypatch):
    from skyk.agent import mounts

    bucket = new_bucket(s3, tmp_path)
    node.client.mount(spec(s3, bucket, ("~/out", "", "MOUNT")))
    dest = node.home / "out"
    # A file still open for writing is never uploaded: its flush cannot finish.
    with open(dest / "open.txt", "w") as f:
        f.write("not closed yet")
        f.flush()
        notes: list[str] = []
        with monkeypatch.context() as patch:
            patch.setenv("HOME", str(node.home))  # the node's own view, in this process
            answer, timed_out = mounts.unmount(notes.append, timeout=1.0)
        assert answer["unmounted"] == [] and len(answer["errors"]) == 1
        assert timed_out == answer["errors"] and "open.txt" in timed_out[0]
        assert notes and "waiting for 1 written file(s)" in notes[0]
        assert mounted(dest) and len(node.records()) == 1
    assert node.client.unmount() == {"unmounted": [str(dest)], "errors": []}
    assert s3.read_object(BucketRef("s3", bucket), "open.txt") == b"not closed yet"


def test_autostop_unmounts_every_node_before_its_command(tmp_path, s3):
    nodes = [Node(tmp_path / f"n{rank}") for rank in range(2)]
    try:
        bucket = new_bucket(s3, tmp_path)
        stopped = nodes[0].home / "stopped"
        # What the command sees tells whether the mounts were gone when it ran.
        nodes[0].client.write_cluster_info(cluster_info(
            nodes, f'ls "$HOME/data" > {stopped}.tmp; mv {stopped}.tmp {stopped}'))
        for rank, node in enumerate(nodes):
            node.client.mount(spec(s3, bucket, ("~/data", f"node{rank}", "MOUNT")))
            (node.home / "data/result.txt").write_text(f"from node {rank}")
        nodes[0].client.start()
        nodes[0].client.autostop(0.0)
        wait_for(stopped.exists, timeout=60, what="the autostop command")
        assert stopped.read_text() == ""  # the mount point, empty once unmounted
        for rank, node in enumerate(nodes):
            assert not mounted(node.home / "data") and node.records() == []
            assert s3.read_object(BucketRef("s3", bucket, f"node{rank}"), "result.txt") == \
                f"from node {rank}".encode()
    finally:
        try:
            nodes[0].client.shutdown()
        except AgentError:
            pass
        for node in nodes:
            node.teardown()


def test_a_mount_whose_rclone_died_is_mounted_again_and_unmounts_cleanly(node, s3, tmp_path):
    bucket = new_bucket(s3, tmp_path, {"a.txt": b"alpha"})
    the_spec = spec(s3, bucket, ("~/data", "", "MOUNT"))
    node.client.mount(the_spec)
    dead = node.records()[0]["pid"]
    os.kill(dead, signal.SIGKILL)
    # What a killed rclone leaves: a mount point that answers nothing.
    wait_for(lambda: mountns.disconnected(node.home / "data"), what="the mount to lose its rclone")
    node.client.mount(the_spec)
    assert node.records()[0]["pid"] != dead
    assert (node.home / "data/a.txt").read_text() == "alpha"
    os.kill(node.records()[0]["pid"], signal.SIGKILL)
    assert node.client.unmount() == {"unmounted": [str(node.home / "data")], "errors": []}
    assert not mounted(node.home / "data") and (node.home / "data").is_dir()


def test_a_mount_on_a_directory_with_files_says_why_it_failed(node, s3, tmp_path):
    bucket = new_bucket(s3, tmp_path)
    (node.home / "data").mkdir()
    (node.home / "data/mine.txt").write_text("local")
    with pytest.raises(AgentError) as caught:
        node.client.mount(spec(s3, bucket, ("~/data", "", "MOUNT")))
    assert "not empty" in str(caught.value) and "\n" not in str(caught.value)
    assert node.records() == [] and not mounted(node.home / "data")


@pytest.fixture
def netns_node(tmp_path):
    """A node in a network namespace of its own, as the local cloud makes them when run as root."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter"):
        pytest.skip("network namespaces need root, ip and nsenter")
    netns = f"skyk-mt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    node = Node(tmp_path)
    node.runner = LocalRunner(home=str(node.home), marker=node.marker, netns=netns)
    node.client = AgentClient(node.runner, timeout=120)
    try:
        yield node
    finally:
        try:
            node.client.shutdown()
        except AgentError:
            pass
        for record in node.records():  # a mount in a namespace of its own: its rclone ends it
            os.kill(record["pid"], signal.SIGKILL)
        node.teardown()
        subprocess.run(["ip", "netns", "del", netns], check=False)


def disk_spec(source: Path, mode: str = "MOUNT") -> dict:
    """A spec of a store with no network: rclone's alias of the local directory ``source``."""
    return {"remotes": {"disk": {"remote": {"type": "alias", "remote": str(source.parent)}}},
            "mounts": [{"dest": "~/data", "remote": "disk", "path": source.name, "mode": mode}]}


def test_in_a_network_namespace_sandbox_the_jobs_see_the_mount(netns_node, tmp_path):
    # ip netns exec gives each command a mount namespace of its own: the mount
    # must be made where the daemon, and so the jobs, run.
    node = netns_node
    source = tmp_path / "store/bucket"
    source.mkdir(parents=True)
    (source / "in.txt").write_text("from the store")
    node.client.write_cluster_info(cluster_info([node]))
    node.client.start()
    node.client.mount(disk_spec(source))
    job = node.client.submit({"run": "cat ~/data/in.txt && echo from the job > ~/data/out.txt"})
    done = wait_for(lambda: (j := node.client.job(job))["status"] not in ("PENDING", "SETTING_UP", "RUNNING")
                    and j, timeout=60, what="the job")
    assert done["status"] == "SUCCEEDED"
    assert node.client.unmount() == {"unmounted": [str(node.home / "data")], "errors": []}
    assert (source / "out.txt").read_text() == "from the job\n"
    assert node.records() == []


def test_in_a_network_namespace_sandbox_without_a_daemon_a_mount_is_refused(netns_node, tmp_path):
    # A worker: no daemon to mount in, so no job would ever see the mount.
    source = tmp_path / "store/bucket"
    source.mkdir(parents=True)
    (source / "in.txt").write_text("from the store")
    with pytest.raises(AgentError) as caught:
        netns_node.client.mount(disk_spec(source))
    assert "mount namespace of its own" in str(caught.value) and "\n" not in str(caught.value)
    assert netns_node.records() == []
    assert netns_node.client.mount(disk_spec(source, "COPY")) == {
        "mounted": [], "copied": [str(netns_node.home / "data")]}
    assert (netns_node.home / "data/in.txt").read_text() == "from the store"


def test_rclones_error_lines_say_why_without_secrets():
    from skyk.agent.mounts import last_error

    failed_mount = ("2026/12/08 03:35:23 INFO  : Local file system at /x: poll-interval is not supported\n"
                    "2026/12/08 03:35:23 mount helper error: fusermount: failed to open /dev/fuse: "
                    "Permission denied\n"
                    "2026/12/08 03:35:23 Fatal error: failed to mount FUSE fs: fusermount: exit status 1\n")
    assert last_error(failed_mount) == ("Fatal error: failed to mount FUSE fs: fusermount: exit status 1 "
                                        "(fusermount: failed to open /dev/fuse: Permission denied)")
    leaky = "2026/12/08 03:35:23 ERROR : a.txt: Failed to copy: PUT https://a.example/c/a.txt?sv=1&sig=s3cr3t 403"
    assert "s3cr3t" not in last_error(leaky) and last_error(leaky).startswith("ERROR : a.txt: Failed")


def test_poweroff_unmounts_every_node_before_powering_it_off(tmp_path, s3, monkeypatch):
    # sudo is a stand-in that writes down what it was asked: the nodes' PATH comes from ours.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sudo").write_text('#!/bin/sh\nls "$HOME/data" > "$HOME/powered-off"\n')
    (fake / "sudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    nodes = [Node(tmp_path / f"n{rank}") for rank in range(2)]
    try:
        for node in nodes:  # never the real sudo: it would power this machine off
            found = node.runner.run("command -v sudo").stdout.strip()
            assert found == str(fake / "sudo"), found
        bucket = new_bucket(s3, tmp_path)
        nodes[0].client.write_cluster_info(cluster_info(nodes))
        for rank, node in enumerate(nodes):
            node.client.mount(spec(s3, bucket, ("~/data", f"node{rank}", "MOUNT")))
            (node.home / "data/result.txt").write_text(f"from node {rank}")
        done = nodes[0].runner.run(f"PYTHONPATH=$HOME/.skyk/agent {nodes[0].runner.python} -m skyk_agent "
                                   f"poweroff", timeout=120)
        assert done.returncode == 0, done.stderr
        for rank, node in enumerate(nodes):
            assert (node.home / "powered-off").read_text() == ""  # the mount point, empty by then
            assert not mounted(node.home / "data") and node.records() == []
            assert s3.read_object(BucketRef("s3", bucket, f"node{rank}"), "result.txt") == \
                f"from node {rank}".encode()
    finally:
        for node in nodes:
            node.teardown()


def test_a_destination_the_user_cannot_make_says_so_in_one_line(tmp_path):
    from skyk.agent.mounts import MountError, make_dest

    (tmp_path / "file").write_text("x")
    with pytest.raises(MountError, match="exists and is not a directory"):
        make_dest(tmp_path / "file")
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return
    # As a user who may not write there, and whose sudo (a stand-in) asks for a password; both
    # in a directory that user can enter (pytest's own are root's alone).
    shared = Path(tempfile.mkdtemp(prefix="skyk-mounts-"))
    try:
        shared.chmod(0o755)
        (shared / "bin").mkdir(mode=0o755)
        (shared / "bin/sudo").write_text('#!/bin/sh\necho "stand-in sudo: a password is required" >&2\nexit 1\n')
        (shared / "bin/sudo").chmod(0o755)
        code = ("import sys; from skyk.agent.mounts import MountError, make_dest\n"
                "try:\n    make_dest(__import__('pathlib').Path(sys.argv[1]))\n"
                "except MountError as exc:\n    print(exc)\n")
        import skyk.agent

        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                               sys.executable, "-c", code, str(shared / "datasets")],
                              env={"PATH": f"{shared / 'bin'}:/usr/bin:/bin",
                                   "PYTHONPATH": str(Path(skyk.agent.__file__).parents[2])},
                              capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(shared)
    assert done.stdout.strip() == (f"cannot create {shared / 'datasets'}: this user may not, and sudo -n "
                                   f"could not (stand-in sudo: a password is required); use a destination "
                                   f"under ~/ or one this user can write"), done.stderr


def test_a_mount_in_use_stays_mounted_and_says_so(node, s3, tmp_path):
    bucket = new_bucket(s3, tmp_path)
    node.client.mount(spec(s3, bucket, ("~/data", "", "MOUNT")))
    dest = node.home / "data"
    user = subprocess.Popen(["sleep", "300"], cwd=dest)
    try:
        answer = node.client.unmount()
        assert answer["unmounted"] == [] and len(answer["errors"]) == 1
        assert answer["errors"][0].startswith(f"unmounting {dest} failed") and "\n" not in answer["errors"][0]
        assert mounted(dest) and len(node.records()) == 1
    finally:
        user.kill()
        user.wait()
    assert node.client.unmount() == {"unmounted": [str(dest)], "errors": []}
