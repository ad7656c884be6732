"""Across the fake clouds of the test bed: a launch that fails over from one cloud to the
next, and ``skyk serve`` replicas that are VMs reached over SSH, placed by price across
clouds and replaced when their cloud takes them away.

Each cloud's fake runs with its own node twins (its own bridge); skyk is pointed at
them only through the settings a user would make (``env()`` of each fake). Needs
root, ``ip``, ``sshd`` and ``sudo``, and skyk-router.
"""

from __future__ import annotations

import json

import pytest
import testbed_helpers as tb
from lifecycle_helpers import wait_for
from serve_helpers import needs_router, wait_serving

pytestmark = [pytest.mark.slow, needs_router]

SERVICE = """\
service:
  readiness_probe: /index.html
  replicas: {replicas}
resources:
{resources}
  ports: 8080
run: |
  echo "replica $SKYK_SERVE_REPLICA_ID" > index.html
  exec python3 -m http.server 8080 --bind 0.0.0.0
"""


@pytest.fixture
def aws_bed(tmp_path, shared_catalogs):
    """A fake EC2 whose instances are node twins (bridge skyksv0)."""
    from fakecloud import FakeEC2

    with tb.bed_with_twins(lambda twins: FakeEC2(twins=twins, catalog_dir=shared_catalogs),
                           tmp_path / "aws", bridge="skyksv0", subnet="10.222.0.0/16") as bed:
        yield bed


@pytest.fixture
def gcp_bed(tmp_path, shared_catalogs):
    """A fake Compute Engine whose instances are node twins (bridge skyksv1)."""
    from fakecloud.gcp import FakeGCE

    with tb.bed_with_twins(lambda twins: FakeGCE(twins=twins, catalog_dir=shared_catalogs),
                           tmp_path / "gcp", bridge="skyksv1", subnet="10.223.0.0/16") as bed:
        yield bed


@pytest.fixture
def azure_bed(tmp_path):
    """A fake Resource Manager whose VMs are node twins (bridge skyksv2)."""
    from fakecloud.azure import FakeARM

    with tb.bed_with_twins(lambda twins: FakeARM(twins=twins), tmp_path / "azure",
                           bridge="skyksv2", subnet="10.224.0.0/16") as bed:
        yield bed


def _service(skyk, env: dict, tmp_path, name: str, replicas: int, resources: str):
    task = tmp_path / f"{name}.yaml"
    task.write_text(SERVICE.format(replicas=replicas, resources=resources))
    up = skyk("serve", "up", "-n", name, str(task), "-y", env=env, timeout=180)
    assert up.returncode == 0, up.stderr
    return up.stdout.strip()


def _replicas(skyk, env: dict, name: str) -> list[dict]:
    result = skyk("serve", "status", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    [service] = [s for s in json.loads(result.stdout) if s["name"] == name]
    return service["replicas"]


def _ready(skyk, env, name: str, count: int) -> list[dict] | None:
    ready = [r for r in _replicas(skyk, env, name) if r["status"] == "READY"]
    return ready if len(ready) == count else None


def _reclaim_aws(bed, cluster: str) -> None:
    [instance] = [i for i in bed.instances() if i["state"] == "running"
                  and i["tags"].get("skyk-cluster") == cluster]
    bed.preempt(instance["id"])


def _reclaim_gcp(bed, cluster: str) -> None:
    [instance] = [i for i in bed.instances() if i["labels"].get("skyk-cluster") == cluster]
    bed.preempt(instance["name"], zone=instance["zone"].rsplit("/", 1)[-1])


def _reclaim_azure(bed, cluster: str) -> None:
    [vm] = [r for r in bed.resources() if r["type"] == "Microsoft.Compute/virtualMachines"
            and (r.get("tags") or {}).get("skyk-cluster") == cluster]
    bed.evict(vm["id"])


#: cloud -> (where its replicas run, how its fake takes a spot VM back)
SPOT = {"aws": ("aws/us-east-1", _reclaim_aws), "gcp": ("gcp/us-central1", _reclaim_gcp),
        "azure": ("azure/eastus", _reclaim_azure)}


@pytest.mark.parametrize("cloud", sorted(SPOT))
def test_a_preempted_spot_replica_is_replaced(skyk, cloud, request, tmp_path):
    bed = request.getfixturevalue(f"{cloud}_bed")
    infra, reclaim = SPOT[cloud]
    env = bed.env()
    try:
        endpoint = _service(skyk, env, tmp_path, "spotty", 2, f"  infra: {infra}\n  cpus: 2+\n"
                            "  use_spot: true")
        first = wait_for(lambda: _ready(skyk, env, "spotty", 2), timeout=240, interval=1,
                         what=f"2 READY replicas on {cloud}")
        assert {r["cloud"] for r in first} == {cloud} and all(r["spot"] for r in first)
        wait_serving(endpoint, {"replica 1", "replica 2"}, "/index.html")
        reclaim(bed, next(r for r in first if r["id"] == 1)["cluster"])

        def replaced() -> list[dict] | None:
            replicas = _replicas(skyk, env, "spotty")
            preempted = [r["id"] for r in replicas if r["status"] == "PREEMPTED"]
            ready = [r["id"] for r in replicas if r["status"] == "READY"]
            return replicas if preempted == [1] and sorted(ready) == [2, 3] else None

        wait_for(replaced, timeout=240, interval=1, what="replica 1 seen PREEMPTED and replaced by 3")
        wait_serving(endpoint, {"replica 2", "replica 3"}, "/index.html")
    finally:
        down = skyk("serve", "down", "-a", "-y", env=env, timeout=300)
        assert down.returncode == 0, down.stderr
    tb.assert_no_twins_left(bed)


def _offered(catalogs, cloud: str, instance_type: str) -> set[tuple[str, str]]:
    """(region, zone) of every catalog row of ``instance_type`` on ``cloud``."""
    import csv

    with open(catalogs / cloud / "vms.csv", newline="") as file:
        return {(row["Region"], row.get("AvailabilityZone") or "") for row in csv.DictReader(file)
                if row["InstanceType"] == instance_type}


def test_the_seed_service_spreads_over_azure_and_gcp_when_the_cheapest_are_full(
        skyk, gcp_bed, azure_bed, tmp_path, shared_catalogs):
    """Two replicas allowing {A100-80GB:8, L4:8}; GCP's L4 machines (the cheapest) have no
    capacity and its A100-80GB machines room for one: one replica lands on GCP, the other on
    Azure, the next cheapest. Both serve through the one endpoint."""
    for _, zone in _offered(shared_catalogs, "gcp", "g2-standard-96"):
        gcp_bed.fail("ZONE_RESOURCE_POOL_EXHAUSTED", zone=zone, machine_type="g2-standard-96", times=None)
    a100_zones = sorted(zone for _, zone in _offered(shared_catalogs, "gcp", "a2-ultragpu-8g"))
    cheapest = "us-central1-a"
    assert cheapest in a100_zones
    # Room for one: the first insert there finds none, a later one fits; elsewhere none.
    gcp_bed.fail("ZONE_RESOURCE_POOL_EXHAUSTED", zone=cheapest, machine_type="a2-ultragpu-8g", times=1)
    for zone in a100_zones:
        if zone != cheapest:
            gcp_bed.fail("ZONE_RESOURCE_POOL_EXHAUSTED", zone=zone, machine_type="a2-ultragpu-8g", times=None)
    env = {**gcp_bed.env(), **azure_bed.env()}
    try:
        endpoint = _service(skyk, env, tmp_path, "qwen", 2, "  accelerators: {A100-80GB: 8, L4: 8}")
        ready = wait_for(lambda: _ready(skyk, env, "qwen", 2), timeout=600, interval=2,
                         what="2 READY replicas")
        places = sorted((r["cloud"], r["region"]) for r in ready)
        assert places == [("azure", "eastus"), ("gcp", "us-central1")], ready
        wait_serving(endpoint, {"replica 1", "replica 2"}, "/index.html")
        table = skyk("serve", "status", "qwen", env=env).stdout
        print(table)
        rows = table.split("Service Replicas\n", 1)[1].splitlines()[1:]
        # SkyPilot's shape: RESOURCES as '1x Azure({'A100-80GB': 8})', then STATUS and REGION.
        shown = sorted(" ".join(row.split()[-5:]) for row in rows)
        assert shown == ["1x Azure({'A100-80GB': 8}) READY eastus",
                         "1x GCP({'A100-80GB': 8}) READY us-central1"], table
    finally:
        down = skyk("serve", "down", "-a", "-y", env=env, timeout=300)
        assert down.returncode == 0, down.stderr
    assert [i for i in gcp_bed.instances()] == []
    assert azure_bed.twins.twins() == [] and gcp_bed.twins.twins() == []


def test_a_global_gpu_quota_on_gcp_moves_on_to_the_next_cloud_at_once(skyk, gcp_bed, azure_bed, tmp_path):
    # GCP is cheapest for A100-80GB:8 (us-central1), but the project may use no GPU anywhere;
    # Azure's cheapest region has no room once. The launch lands in Azure's next region.
    gcp_bed.fail("QUOTA_EXCEEDED", quota="GPUS_ALL_REGIONS", times=None)
    azure_bed.fail("AllocationFailed", location="eastus", times=1)
    env = {**gcp_bed.env(), **azure_bed.env()}
    task = tb.task_file(tmp_path, "resources:\n  accelerators: A100-80GB:8\n"
                        "run: echo landed on $(echo $SKYK_CLUSTER_INFO | python3 -c"
                        " 'import json,sys; i=json.load(sys.stdin); print(i[\"cloud\"], i[\"region\"])')\n")
    try:
        launched = skyk("launch", "-c", "gpu", task, "-y", env=env, timeout=300)
        assert launched.returncode == 0, launched.stderr
        assert "landed on azure eastus2" in launched.stdout
        inserts = [c for c in gcp_bed.calls if c.action == "instances.insert"]
        assert len(inserts) == 1, "GCP was tried again after a project-wide GPU quota"
        lines = launched.stderr.splitlines()
        at = lines.index("Provisioned on azure/eastus2 after 2 failed attempt(s):")
        print("\n".join(lines[at:at + 4]))
        first, second = (lines[at + 2].split(maxsplit=7), lines[at + 3].split(maxsplit=8))
        assert first[1].startswith("gcp/us-central1") and first[3:6] == ["quota", "cloud", "gcp"]
        assert "QUOTA_EXCEEDED: Quota 'GPUS_ALL_REGIONS' exceeded" in lines[at + 2]
        assert second[1:8] == ["azure/eastus", "Standard_ND96amsr_A100_v4", "capacity",
                               "Standard_ND96amsr_A100_v4", "in", "region", "azure/eastus"]
        assert second[8].startswith("AllocationFailed")
    finally:
        down = skyk("down", "-a", "-y", env=env, timeout=300)
        assert down.returncode == 0, down.stderr
    assert gcp_bed.instances() == [] and azure_bed.twins.twins() == []
