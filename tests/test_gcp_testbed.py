"""GCP end to end through the real CLI, against the test bed: the fake Compute Engine
(``fakecloud.gcp``), with every instance backed by a node twin (``fakecloud.twins``).

skyk is pointed at the bed only by what a user could set (``GOOGLE_APPLICATION_CREDENTIALS``
naming a service-account key whose ``token_uri`` is the bed's, ``GOOGLE_CLOUD_PROJECT``,
gcloud's ``CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE``); the product code does not know it is
being tested. Needs root, ``ip``, ``sshd`` and ``sudo`` (skipped otherwise, failed in CI).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import testbed_helpers as tb
from lifecycle_helpers import wait_for
from skyk.builtin.local_sandbox import find_processes
from skyk.catalog.offering import Offering

pytestmark = pytest.mark.slow

#: The twins' own bridge and subnet (one TwinHost per bridge on the machine).
BRIDGE, SUBNET = "skykgcp1", "10.220.0.0/16"
REGION = "us-central1"
#: The login user the plugin puts in the ssh-keys metadata.
USER = "gcpuser"


@pytest.fixture
def bed(tmp_path, shared_catalogs):
    """A fake GCE whose instances are node twins; checks nothing is left when the test ends."""
    from fakecloud.gcp import FakeGCE

    with tb.bed_with_twins(lambda twins: FakeGCE(twins=twins, catalog_dir=shared_catalogs),
                           tmp_path, bridge=BRIDGE, subnet=SUBNET) as gce:
        yield gce


@pytest.fixture
def gcp(skyk, bed, isolated_home):
    """Run the CLI pointed at the bed; ``down -a`` afterwards."""
    yield from tb.cli_on_bed(skyk, bed)


def _live(bed, cluster: str | None = None) -> list[dict]:
    """The bed's instances (of ``cluster``, if given)."""
    return [i for i in bed.instances()
            if cluster is None or i["labels"].get("skyk-cluster") == cluster]


def _nodes(bed, cluster: str) -> list[dict]:
    """The cluster's instances in rank order."""
    return sorted(_live(bed, cluster), key=lambda i: int(i["labels"]["skyk-node-rank"]))


def _nat_ip(instance: dict) -> str | None:
    return instance["networkInterfaces"][0]["accessConfigs"][0].get("natIP")


def _firewalls(bed, cluster: str) -> list[dict]:
    """The bed's firewall rules made for ``cluster`` (named ``skyk-CLUSTER-UID``)."""
    return [r for r in bed.firewalls() if r["name"].startswith(f"skyk-{cluster}-")]


def _assert_nothing_left(bed, cluster: str) -> None:
    assert _live(bed, cluster) == [], "instances left"
    assert [d["name"] for d in bed.disks() if d["labels"].get("skyk-cluster") == cluster] == [], \
        "disks left"
    assert _firewalls(bed, cluster) == [], "firewall rules left"
    tb.assert_no_twins_left(bed)


def test_a_two_node_cluster_lives_its_whole_life_on_gcp(gcp, bed, tmp_path):
    task = tb.two_node_task(tmp_path, f"gcp/{REGION}", "  ports: 8080\n")
    launched, namespaces = tb.launch_on_twins(gcp, bed, "pair", task, 2)
    nodes = _nodes(bed, "pair")
    assert [i["labels"]["skyk-node-rank"] for i in nodes] == ["0", "1"]
    assert {i["labels"]["skyk-attempt"] for i in nodes} == {nodes[0]["name"].split("-")[1]}
    private = [i["networkInterfaces"][0]["networkIP"] for i in nodes]
    assert all(ip.startswith("10.220.") for ip in private)
    tb.assert_both_nodes_ran(launched.stdout, private, USER)
    # The boot disks: the default size and tier; the task's port on a rule of its own.
    assert {d["sizeGb"] for d in bed.disks()} == {"256"}
    assert {d["type"].rsplit("/", 1)[1] for d in bed.disks()} == {"pd-balanced"}
    (rule,) = _firewalls(bed, "pair")
    assert all(i["tags"]["items"] == [rule["name"]] for i in nodes)
    assert rule["targetTags"] == [rule["name"]] and rule["network"].endswith("global/networks/default")
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["8080"]}]

    head_ip = gcp("status", "--ip", "pair").stdout.strip()
    assert head_ip == _nat_ip(nodes[0]) and head_ip != private[0]

    tb.exec_on_both(gcp, "pair", "exec")

    logs = gcp("logs", "pair", "1", "--no-follow")
    assert logs.returncode == 0 and f"setup on 0 as {USER}" in logs.stdout

    tb.stop_cluster(gcp, "pair")
    assert {i["status"] for i in _live(bed, "pair")} == {"TERMINATED"}

    new_ip = tb.start_cluster(gcp, "pair")
    assert new_ip == _nat_ip(_nodes(bed, "pair")[0]) != head_ip
    tb.exec_on_both(gcp, "pair", "back")

    down = gcp("down", "pair", "-y")
    assert down.returncode == 0, down.stderr
    _assert_nothing_left(bed, "pair")
    assert bed.disks() == []
    assert find_processes([], namespaces) == [], "node processes left"


def _one_node(tmp_path: Path, infra: str = f"gcp/{REGION}", extra: str = "") -> str:
    return tb.one_node_task(tmp_path, infra, extra)


def _inserts(bed) -> list:
    return [c for c in bed.calls if c.action == "instances.insert"]


def _tried(result) -> list[str]:
    """The infra of each attempt the launch printed (``gcp/REGION/ZONE``...)."""
    return [line.split(" on ")[1].split()[0] for line in result.stderr.splitlines()
            if line.startswith("Provisioning")]


def test_no_capacity_in_the_cheapest_zone_lands_in_the_next(gcp, bed, tmp_path):
    bed.fail("ZONE_RESOURCE_POOL_EXHAUSTED", region=REGION, times=1)
    launched = gcp("launch", "-c", "zones", _one_node(tmp_path), "-y")
    assert launched.returncode == 0, launched.stderr
    failed, landed = _inserts(bed)[:2]
    assert failed.fault and not landed.fault and failed.zone != landed.zone
    (node,) = _live(bed, "zones")
    assert node["zone"].endswith(f"/zones/{landed.zone}")
    tried = _tried(launched)
    assert tried == [f"gcp/{REGION}/{failed.zone}", f"gcp/{REGION}/{landed.zone}"], launched.stderr
    assert f"landed in {landed.zone}" in launched.stdout
    assert "capacity" in launched.stderr and "ZONE_RESOURCE_POOL_EXHAUSTED" in launched.stderr
    assert len(_inserts(bed)) == 2, "one insert per attempt"
    assert _live(bed) == _live(bed, "zones"), "the failed attempt left an instance"
    assert [d["name"] for d in bed.disks()] == [node["name"]], "the failed attempt left a disk"


def test_a_regional_quota_skips_the_rest_of_the_region(gcp, bed, tmp_path):
    task = _one_node(tmp_path, infra="gcp")
    plan = gcp("launch", task, "--dryrun")
    assert plan.returncode == 0, plan.stderr
    cheapest = plan.stdout.split(" on gcp/")[1].split("/")[0]  # the region tried first
    bed.fail("QUOTA_EXCEEDED", region=cheapest, quota="CPUS", times=None)
    launched = gcp("launch", "-c", "quota", task, "-y")
    assert launched.returncode == 0, launched.stderr
    inserts = _inserts(bed)
    assert inserts[0].zone.startswith(f"{cheapest}-") and inserts[0].fault
    assert all(not c.zone.startswith(f"{cheapest}-") for c in inserts[1:]), [c.zone for c in inserts]
    assert len(inserts) == 2 and not inserts[-1].fault
    tried = _tried(launched)
    assert tried[0].startswith(f"gcp/{cheapest}/") and not tried[1].startswith(f"gcp/{cheapest}/")
    # GCE's message, its double spaces made single in skyk's one-line reason.
    assert f"Quota 'CPUS' exceeded. Limit: 0.0 in region {cheapest}" in launched.stderr


def test_a_project_wide_gpu_quota_blocks_gcp_after_one_attempt(gcp, bed, tmp_path):
    bed.fail("QUOTA_EXCEEDED", quota="GPUS_ALL_REGIONS", times=None)
    task = _one_node(tmp_path, infra="gcp", extra="  accelerators: T4:1\n")
    launched = gcp("launch", "-c", "gpus", task, "-y")
    assert launched.returncode != 0
    assert len(_inserts(bed)) == 1, "GCP was asked again after a project-wide quota"
    assert len([t for t in _tried(launched) if t.startswith("gcp/")]) == 1, launched.stderr
    assert "GPUS_ALL_REGIONS" in launched.stderr and "globally" in launched.stderr
    body = _inserts(bed)[0].body
    assert body["guestAccelerators"][0]["acceleratorType"].endswith("/acceleratorTypes/nvidia-tesla-t4")
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert _live(bed) == [] and bed.disks() == []


def test_a_key_gcp_does_not_know_gets_one_line_and_makes_nothing(gcp, bed, tmp_path):
    deleted = bed.write_key(tmp_path / "deleted-key.json", registered=False)
    bad = gcp("launch", "-c", "creds", _one_node(tmp_path), "-y",
              env={"GOOGLE_APPLICATION_CREDENTIALS": str(deleted)})
    line = tb.one_clear_line(bad)
    assert "credentials" in bad.stderr and "authError" in line, bad.stderr
    assert len([t for t in _tried(bad) if t.startswith("gcp/")]) == 1, bad.stderr
    assert _live(bed) == [] and bed.calls and all(c.status == 401 for c in bed.calls)


def test_check_reads_credentials_offline(gcp, bed):
    calls, tokens = len(bed.calls), bed.token_requests
    # An endpoint nobody listens on: 'check' must not need it.
    checked = gcp("check", "-o", "json", env={"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE":
                                              "http://127.0.0.1:9/compute/v1/"})
    assert checked.returncode == 0, checked.stderr
    (row,) = [r for r in json.loads(checked.stdout) if r["cloud"] == "gcp"]
    assert row["enabled"] and bed.project in row["reason"], row
    assert (len(bed.calls), bed.token_requests) == (calls, tokens)


def test_a_preempted_spot_cluster_shows_so_and_down_cleans_it(gcp, bed, tmp_path):
    launched = gcp("launch", "-c", "spot", _one_node(tmp_path), "--use-spot", "-y")
    assert launched.returncode == 0, launched.stderr
    (node,) = _live(bed, "spot")
    assert node["scheduling"]["provisioningModel"] == "SPOT"
    assert node["scheduling"]["instanceTerminationAction"] == "DELETE"
    stopped = gcp("stop", "spot", "-y")
    assert "spot" in tb.one_clear_line(stopped)
    bed.preempt(node["name"])
    assert _live(bed, "spot") == [], "GCE deletes a preempted DELETE-action spot VM"
    tb.shown_unsettled_then_down(gcp, "spot", "preempted")
    _assert_nothing_left(bed, "spot")


def test_a_launch_killed_before_the_agent_started_is_cleaned_up_by_label(gcp, bed, tmp_path,
                                                                        shared_catalogs):
    tb.kill_launch_waiting_for_ssh(bed, shared_catalogs,
                                "killed", _one_node(tmp_path, extra="  ports: 8080\n"))
    assert len(_live(bed, "killed")) == 1, "the instance should still exist"
    assert len(_firewalls(bed, "killed")) == 1
    tb.shown_unsettled_then_down(gcp, "killed", "interrupted before the node agent started")
    _assert_nothing_left(bed, "killed")


def test_autostop_powers_the_nodes_off_and_gce_stops_them(gcp, bed, tmp_path):
    launched = gcp("launch", "-c", "idle", _one_node(tmp_path), "-y", "-i", "0")
    assert launched.returncode == 0, launched.stderr
    wait_for(lambda: {i["status"] for i in _live(bed, "idle")} == {"TERMINATED"}, timeout=120,
             what="autostop to stop the instance")
    assert tb.cluster_status(gcp, "idle")["status"] == "STOPPED"


def test_autostop_down_is_refused_with_one_line(gcp, bed, tmp_path):
    # Refused before anything is made: no VM is left up without the autostop asked for.
    launched = gcp("launch", "-c", "keep", _one_node(tmp_path), "-y", "-i", "5", "--down")
    line = tb.one_clear_line(launched)
    assert "no place it can run can tear down itself when idle" in line and "gcp: GCP cannot" in line
    assert "Provisioning" not in launched.stderr and bed.instances() == []
    assert tb.cluster_status(gcp, "keep", refresh=False) is None

    launched = gcp("launch", "-c", "up", _one_node(tmp_path), "-y")
    assert launched.returncode == 0, launched.stderr
    line = tb.one_clear_line(gcp("autostop", "up", "-i", "5", "--down"))
    assert "tear down" in line and "autostop is not set" in line
    assert [i["status"] for i in _live(bed, "up")] == ["RUNNING"]


class TestGCPProvisioningContract(tb.BedContract):
    """GCP passes the contract kit's provisioning tests on the test bed."""

    cloud_name = "gcp"

    @pytest.fixture
    def offering(self) -> Offering:
        return Offering("gcp", "n2-standard-2", 2.0, 8.0, REGION, f"{REGION}-a", 0.0971, 0.0235)

