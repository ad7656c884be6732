"""Buckets on the fake clouds' node twins: an AWS cluster (moto's EC2, each instance a twin in
its own network and mount namespaces) mounts S3, copies GCS and caches Azure Blob.

The emulators listen on the twins' bridge, so the nodes reach them as VMs
reach their cloud's storage endpoint; skyk and the SDKs are pointed at that
address by the variables a user would set.
"""

from __future__ import annotations

import ipaddress
import secrets

import pytest
from lifecycle_helpers import wait_for
from storage_beds import StorageBed, require_storage_tools
from testbed_helpers import assert_no_twins_left, bed_with_twins, cli_on_bed, task_file

pytestmark = pytest.mark.slow

#: The twins' bridge and subnet, this module's alone.
BRIDGE, SUBNET = "skykbk0", "10.225.0.0/16"
AZURE_URL = "https://devstoreaccount1.blob.core.windows.net"


@pytest.fixture
def bed(tmp_path, shared_catalogs):
    from fakecloud import FakeEC2

    require_storage_tools()
    with bed_with_twins(lambda twins: FakeEC2(twins=twins, catalog_dir=shared_catalogs), tmp_path,
                        bridge=BRIDGE, subnet=SUBNET) as ec2:
        yield ec2


@pytest.fixture
def stores(bed):
    # On the bridge's own address, which exists once the twin host is up.
    with StorageBed(host=str(next(ipaddress.ip_network(SUBNET).hosts())),
                    s3_keys=(bed.access_key, bed.secret_key)) as found:
        yield found


class _Both:
    """The EC2 bed and the stores, as one bed to point the CLI at."""

    def __init__(self, ec2, stores):
        self.ec2, self.stores = ec2, stores

    def env(self) -> dict[str, str]:
        # The EC2 bed's own credentials win; FakeS3 is started with the same key.
        return {**self.stores.env(), **self.ec2.env()}


@pytest.fixture
def aws(skyk, bed, stores, isolated_home):
    yield from cli_on_bed(skyk, _Both(bed, stores))


def test_a_two_node_aws_cluster_reads_and_writes_three_stores(aws, bed, stores, tmp_path):
    s3, gcs, az = (f"skyk-{kind}-{secrets.token_hex(3)}" for kind in ("s3", "gcs", "az"))
    for store, bucket in (("s3", s3), ("gcs", gcs), ("azure", az)):
        stores.make(store, bucket)
        stores.put(store, bucket, "in/hello.txt", f"hello from {store}\n".encode())
    task = task_file(tmp_path, f"""\
num_nodes: 2
resources:
  infra: aws/us-east-1
  cpus: 2+
file_mounts:
  ~/s3:
    source: s3://{s3}/in
    mode: MOUNT
  ~/gcs: gs://{gcs}/in
  ~/az:
    source: {AZURE_URL}/{az}/in
    mode: MOUNT_CACHED
run: |
  cat ~/s3/hello.txt ~/gcs/hello.txt ~/az/hello.txt
  echo "$SKYK_NODE_RANK as $(whoami)" > ~/s3/node-$SKYK_NODE_RANK.txt
  echo "$SKYK_NODE_RANK as $(whoami)" > ~/az/node-$SKYK_NODE_RANK.txt
""")
    launched = aws("launch", "-c", "bkt", task, "-y", timeout=600)
    assert launched.returncode == 0, launched.stderr
    for store in ("s3", "gcs", "azure"):
        assert launched.stdout.count(f"hello from {store}") == 2, launched.stdout
    down = aws("down", "bkt", "-y", timeout=600)
    assert down.returncode == 0, down.stderr
    for rank in (0, 1):
        assert stores.get("s3", s3, f"in/node-{rank}.txt") == f"{rank} as ubuntu\n".encode()
        assert stores.get("azure", az, f"in/node-{rank}.txt") == f"{rank} as ubuntu\n".encode()
    wait_for(lambda: not bed.twins.twins(), what="the twins to go")
    assert_no_twins_left(bed)
