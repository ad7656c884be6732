"""Buckets on the fake clouds' node twins: an AWS cluster (moto's EC2) and an Azure one (the fake
Resource Manager), each VM a twin in its own network and mount namespaces, mount S3, copy GCS
and cache Azure Blob.

The emulators listen on the twins' bridge, so the nodes reach them as VMs
reach their cloud's storage endpoint; skyk and the SDKs are pointed at that
address by the variables a user would set.
"""

from __future__ import annotations

import ipaddress

import pytest
from lifecycle_helpers import wait_for
from storage_beds import (
    StorageBed,
    launch_and_check_three,
    require_storage_tools,
    three_buckets,
    three_store_task,
)
from testbed_helpers import assert_no_twins_left, bed_with_twins, cli_on_bed, task_file

pytestmark = pytest.mark.slow

#: The twins' bridge and subnet, this module's alone.
BRIDGE, SUBNET = "skykbk0", "10.225.0.0/16"
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
    buckets = three_buckets(stores, "in")
    infra, user = CLOUDS[bed.cloud]
    task = task_file(tmp_path, three_store_task(buckets, "in", f"num_nodes: 2\nresources:\n  infra: {infra}\n"
                                                               "  cpus: 2+\n", "$SKYK_NODE_RANK as $(whoami)"))
    launch_and_check_three(cli, stores, buckets, "in", "bkt", (task,), lambda rank: f"{rank} as {user}")
    wait_for(lambda: not bed.twins.twins(), what="the twins to go")
    assert_no_twins_left(bed)
