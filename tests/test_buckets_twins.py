"""Buckets on the fake clouds' node twins: an AWS cluster (moto's EC2) and an Azure one (the fake
Resource Manager), each VM a twin in its own network and mount namespaces, mount S3, copy GCS
and cache Azure Blob.

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
#: per cloud: where the cluster runs, and the user its nodes' cloud-init makes
CLOUDS = {"aws": ("aws/us-east-1", "ubuntu"), "azure": ("azure/eastus", "azureuser")}


def _fake(cloud: str, catalogs):
    if cloud == "aws":
        from fakecloud import FakeEC2

        return lambda twins: FakeEC2(twins=twins, catalog_dir=catalogs)
    from fakecloud import FakeARM

    return lambda twins: FakeARM(twins=twins)


@pytest.fixture(params=sorted(CLOUDS))
def bed(request, tmp_path, shared_catalogs):
    require_storage_tools()
    with bed_with_twins(_fake(request.param, shared_catalogs), tmp_path, bridge=BRIDGE, subnet=SUBNET) as fake:
        fake.cloud = request.param
        yield fake


@pytest.fixture
def stores(bed):
    # On the bridge's own address, which exists once the twin host is up; S3 takes
    # the EC2 bed's key, so one set of AWS credentials reaches both.
    keys = (bed.access_key, bed.secret_key) if bed.cloud == "aws" else None
    with StorageBed(host=str(next(ipaddress.ip_network(SUBNET).hosts())), s3_keys=keys) as found:
        yield found


class _Both:
    """The cloud's bed and the stores, as one bed to point the CLI at."""

    def __init__(self, cloud, stores):
        self.cloud, self.stores = cloud, stores

    def env(self) -> dict[str, str]:
        return {**self.stores.env(), **self.cloud.env()}


@pytest.fixture
def cli(skyk, bed, stores, isolated_home):
    yield from cli_on_bed(skyk, _Both(bed, stores))


def test_a_two_node_cluster_reads_and_writes_three_stores(cli, bed, stores, tmp_path):
    s3, gcs, az = (f"skyk-{kind}-{secrets.token_hex(3)}" for kind in ("s3", "gcs", "az"))
    for store, bucket in (("s3", s3), ("gcs", gcs), ("azure", az)):
        stores.make(store, bucket)
        stores.put(store, bucket, "in/hello.txt", f"hello from {store}\n".encode())
    infra, user = CLOUDS[bed.cloud]
    task = task_file(tmp_path, f"""\
num_nodes: 2
resources:
  infra: {infra}
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
    launched = cli("launch", "-c", "bkt", task, "-y", timeout=600)
    assert launched.returncode == 0, launched.stderr
    for store in ("s3", "gcs", "azure"):
        assert launched.stdout.count(f"hello from {store}") == 2, launched.stdout
    down = cli("down", "bkt", "-y", timeout=600)
    assert down.returncode == 0, down.stderr
    for rank in (0, 1):
        assert stores.get("s3", s3, f"in/node-{rank}.txt") == f"{rank} as {user}\n".encode()
        assert stores.get("azure", az, f"in/node-{rank}.txt") == f"{rank} as {user}\n".encode()
    wait_for(lambda: not bed.twins.twins(), what="the twins to go")
    assert_no_twins_left(bed)
