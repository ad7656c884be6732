"""Buckets end to end on the local cloud: S3, GCS and Azure Blob mounted, copied and made by skyk.

The stores are the emulators of :mod:`storage_beds`; skyk is pointed at
them by the variables a user would set. The local cloud runs on loopback
(``SKYK_LOCAL_NETNS=0``), so its nodes reach the emulators on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets

import pytest
from lifecycle_helpers import down_everything, sandboxes
from storage_beds import StorageBed, launch_and_check_three, three_buckets, three_store_task


@pytest.fixture(scope="module")
def bed():
    with StorageBed() as found:
        yield found


@pytest.fixture
def cli(skyk, bed, isolated_home):
    env = {**bed.env(), "SKYK_LOCAL_NETNS": "0"}

    def run(*args, **kwargs):
        return skyk(*args, env={**env, **kwargs.pop("env", {})}, **kwargs)

    yield run
    down_everything(skyk, isolated_home)


def unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(3)}"


def test_a_task_mounts_copies_and_caches_buckets_and_its_writes_reach_them(cli, bed, tmp_path):
    buckets = three_buckets(bed, "data")
    task = tmp_path / "task.yaml"
    task.write_text(three_store_task(buckets, "data", "num_nodes: 2\n", "from $SKYK_NODE_RANK"))
    # Both nodes see every bucket's contents, and every write goes through before the nodes go.
    launch_and_check_three(cli, bed, buckets, "data", "bk", ("--cloud", "local", str(task)),
                           lambda rank: f"from {rank}")
    # A COPY bucket is the nodes' own copy: it is never written back.
    assert bed.keys("gcs", buckets["gcs"]) == ["data/hello.txt"]


def test_storage_objects_make_fill_list_and_delete_buckets(cli, bed, tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n1,2\n")
    gone, kept = unique("skyk-tmp"), unique("skyk-keep")
    task = tmp_path / "task.yaml"
    task.write_text(f"""\
file_mounts:
  ~/tmp-data:
    name: {gone}
    source: {data}
    store: s3
    mode: MOUNT
    persistent: false
  ~/kept:
    name: {kept}
    source: {data}
    store: gcs
    mode: COPY
run: cat ~/tmp-data/train.csv ~/kept/train.csv
""")
    result = cli("launch", "-c", "so", "--cloud", "local", str(task), "-y", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("1,2") == 2
    assert bed.get("s3", gone, "train.csv") == b"a,b\n1,2\n"
    listed = json.loads(cli("storage", "ls", "-o", "json").stdout)
    assert {(b["name"], b["store"], b["persistent"], b["status"]) for b in listed} == {
        (gone, "s3", False, "READY"), (kept, "gcs", True, "READY")}
    assert all(b["source"] == [str(data)] for b in listed)
    table = cli("storage", "ls").stdout
    assert gone in table and kept in table and "deleted with so" in table
    # A bucket in use is not deleted under its cluster.
    busy = cli("storage", "delete", kept, "-y")
    assert busy.returncode != 0 and "mounted by cluster so" in busy.stderr
    assert cli("down", "so", "-y", timeout=300).returncode == 0
    assert not bed.exists("s3", gone)
    assert bed.exists("gcs", kept)
    assert [b["name"] for b in json.loads(cli("storage", "ls", "-o", "json").stdout)] == [kept]
    result = cli("storage", "delete", kept, "-y")
    assert result.returncode == 0, result.stderr
    assert not bed.exists("gcs", kept)
    assert json.loads(cli("storage", "ls", "-o", "json").stdout) == []


def test_a_stopped_cluster_keeps_its_writes_and_mounts_again_when_started(cli, bed, tmp_path):
    bucket = unique("skyk-stop")
    bed.make("s3", bucket)
    task = tmp_path / "task.yaml"
    task.write_text(f"""\
file_mounts:
  ~/b:
    source: s3://{bucket}
    mode: MOUNT_CACHED
run: echo before-stop > ~/b/note.txt
""")
    assert cli("launch", "-c", "st", "--cloud", "local", str(task), "-y", timeout=300).returncode == 0
    assert cli("stop", "st", "-y", timeout=300).returncode == 0
    assert bed.get("s3", bucket, "note.txt") == b"before-stop\n"
    bed.put("s3", bucket, "while-stopped.txt", b"new\n")
    assert cli("start", "st", timeout=300).returncode == 0
    result = cli("exec", "st", "cat ~/b/note.txt ~/b/while-stopped.txt", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "before-stop" in result.stdout and "new" in result.stdout


@pytest.mark.parametrize("case", ["missing-bucket", "no-credentials", "bad-name", "unknown-scheme",
                                  "local-needs-store"])
def test_bad_bucket_input_is_one_line_before_anything_is_provisioned(cli, bed, tmp_path, isolated_home,
                                                                      case):
    sources = {
        "missing-bucket": ("  ~/d: s3://skyk-no-such-bucket-here/x\n", {}, "does not exist"),
        "no-credentials": ("  ~/d: s3://some-bucket/x\n",
                           {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}, "no credentials for"),
        "bad-name": ("  ~/d:\n    name: Bad_Bucket\n    store: s3\n", {}, "breaks"),
        "unknown-scheme": ("  ~/d: r2://bucket/x\n", {}, "no installed cloud plugin reads r2://"),
        "local-needs-store": ("  ~/d:\n    name: skyk-some-bucket\n", {}, "keeps no buckets"),
    }
    mount, env, expect = sources[case]
    task = tmp_path / "task.yaml"
    task.write_text(f"file_mounts:\n{mount}run: echo hi\n")
    result = cli("launch", "-c", "bad", "--cloud", "local", str(task), "-y", env=env, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and expect in lines[0] and "(hint: " in lines[0], result.stderr
    assert "file_mounts.~/d" in lines[0]
    assert sandboxes(isolated_home) == []
    assert json.loads(cli("status", "-o", "json").stdout) == []


def test_a_cluster_of_namespaced_local_nodes_mounts_on_every_node(skyk, isolated_home, tmp_path):
    """As root the local cloud's nodes have network namespaces, whose commands each get a mount
    namespace of their own: every node's mount is made where its jobs start (the head daemon's)."""
    from fakecloud import FakeS3
    from fakecloud.tools import missing_tool
    from skyk.builtin import local_network as network

    if not network.namespaces_enabled():
        missing_tool("network namespaces need root and iproute2's ip")
    subnet = network.bridge_subnet()
    network.ensure_bridge(subnet)  # the nodes reach this machine there, and so the S3 on it
    with FakeS3(host=network.gateway(subnet)) as s3:
        bucket = unique("skyk-ns")
        s3.client().create_bucket(Bucket=bucket)
        s3.client().put_object(Bucket=bucket, Key="hello.txt", Body=b"hello in a namespace\n")
        task = tmp_path / "task.yaml"
        task.write_text(f"""\
num_nodes: 2
file_mounts:
  ~/b:
    source: s3://{bucket}
    mode: MOUNT
run: |
  cat ~/b/hello.txt
  echo "from $SKYK_NODE_RANK" > ~/b/node-$SKYK_NODE_RANK.txt
""")
        try:
            result = skyk("launch", "-c", "ns", "--cloud", "local", str(task), "-y", env=s3.env(), timeout=300)
            assert result.returncode == 0, result.stderr
            assert result.stdout.count("hello in a namespace") == 2, result.stdout
            assert skyk("down", "ns", "-y", env=s3.env(), timeout=300).returncode == 0
            for rank in (0, 1):
                body = s3.client().get_object(Bucket=bucket, Key=f"node-{rank}.txt")["Body"].read()
                assert body == f"from {rank}\n".encode()
        finally:
            down_everything(skyk, isolated_home)
