"""AWS end to end through the real CLI, against the test bed: moto's EC2 server behind our
fault layer (``fakecloud.ec2``), with every instance backed by a node twin (``fakecloud.twins``).

skyk is pointed at the bed only by what a user could set (``AWS_ENDPOINT_URL_EC2``,
credentials); the product code does not know it is being tested. Needs root, ``ip``,
``sshd`` and ``sudo`` (skipped otherwise, failed in CI).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lifecycle_helpers import wait_for
from skyk.builtin.local_sandbox import find_processes
from skyk.catalog.offering import Offering
from testbed_helpers import (
    BedContract,
    assert_both_nodes_ran,
    assert_no_twins_left,
    bed_with_twins,
    cli_on_bed,
    cluster_status,
    exec_on_both,
    kill_launch_waiting_for_ssh,
    launch_on_twins,
    one_clear_line,
    one_node_task,
    shown_unsettled_then_down,
    start_cluster,
    stop_cluster,
    task_file,
    two_node_task,
)

pytestmark = pytest.mark.slow

#: Twins' addresses: the bed's own bridge and subnet (the local cloud uses 10.213/16).
SUBNET = "10.214.0.0/16"
REGION = "us-east-1"


@pytest.fixture
def bed(tmp_path, shared_catalogs):
    """A fake EC2 whose instances are node twins; checks nothing is left when the test ends."""
    from fakecloud import FakeEC2

    with bed_with_twins(lambda twins: FakeEC2(twins=twins, catalog_dir=shared_catalogs), tmp_path,
                        subnet=SUBNET) as ec2:
        yield ec2


@pytest.fixture
def aws(skyk, bed, isolated_home):
    """Run the CLI pointed at the bed; ``down -a`` afterwards."""
    yield from cli_on_bed(skyk, bed)


def _live(bed, cluster: str | None = None) -> list[dict]:
    """The bed's instances that are not terminated (of ``cluster``, if given)."""
    return [i for i in bed.instances() if i["state"] != "terminated"
            and (cluster is None or i["tags"].get("skyk-cluster") == cluster)]


def _nodes(bed, cluster: str) -> list[dict]:
    """The cluster's live instances in rank order."""
    return sorted(_live(bed, cluster), key=lambda i: int(i["tags"]["skyk-node-rank"]))


def _cluster_groups(bed, cluster: str) -> list[dict]:
    return [g for g in bed.security_groups() if g["tags"].get("skyk-cluster") == cluster]


def _assert_nothing_left(bed, cluster: str) -> None:
    assert _live(bed, cluster) == [], "instances left running"
    assert _cluster_groups(bed, cluster) == [], "security groups left"
    assert_no_twins_left(bed)


def test_a_two_node_cluster_lives_its_whole_life_on_aws(aws, bed, tmp_path):
    task = two_node_task(tmp_path, f"aws/{REGION}")
    launched, namespaces = launch_on_twins(aws, bed, "pair", task, 2)
    nodes = _nodes(bed, "pair")
    assert [i["tags"]["skyk-node-rank"] for i in nodes] == ["0", "1"]
    private = [i["private_ip"] for i in nodes]
    assert all(ip.startswith("10.214.") for ip in private)
    assert_both_nodes_ran(launched.stdout, private, "ubuntu")

    head_ip = aws("status", "--ip", "pair").stdout.strip()
    assert head_ip == nodes[0]["public_ip"] and head_ip != nodes[0]["private_ip"]

    exec_on_both(aws, "pair", "exec")

    logs = aws("logs", "pair", "1", "--no-follow")
    assert logs.returncode == 0 and "setup on 0 as ubuntu" in logs.stdout

    stop_cluster(aws, "pair")
    assert {i["state"] for i in _live(bed, "pair")} == {"stopped"}

    new_ip = start_cluster(aws, "pair")
    assert new_ip == _nodes(bed, "pair")[0]["public_ip"] != head_ip
    exec_on_both(aws, "pair", "back")

    down = aws("down", "pair", "-y")
    assert down.returncode == 0, down.stderr
    _assert_nothing_left(bed, "pair")
    assert find_processes([], namespaces) == [], "node processes left"


def _one_node(tmp_path: Path, infra: str = f"aws/{REGION}", extra: str = "") -> str:
    return one_node_task(tmp_path, infra, extra)


def _run_calls(bed) -> list:
    return [c for c in bed.calls if c.action == "RunInstances"]


def _zone_of(bed, call) -> str | None:
    """The zone a RunInstances call asked for (directly, or through its subnet)."""
    zone = call.params.get("Placement.AvailabilityZone")
    if zone:
        return zone
    subnet = call.params.get("SubnetId") or call.params.get("NetworkInterface.1.SubnetId")
    described = bed.client(call.region).describe_subnets(SubnetIds=[subnet])["Subnets"]
    return described[0]["AvailabilityZone"]


def _failed_attempt_cost(bed, failed) -> str:
    """What a failed attempt cost: its RunInstances calls and the time until the next attempt."""
    runs = _run_calls(bed)
    later = [c for c in runs if c.time > failed.time]
    gap = later[0].time - (failed.time + failed.duration) if later else float("nan")
    same = [c for c in runs if c.region == failed.region and c.error == failed.error]
    return f"{len(same)} RunInstances call(s), {failed.duration * 1000:.0f} ms, next attempt after {gap * 1000:.0f} ms"


def test_no_capacity_in_the_cheapest_zone_lands_in_the_next(aws, bed, tmp_path):
    bed.fail("InsufficientInstanceCapacity", region=REGION, times=1)
    launched = aws("launch", "-c", "zones", _one_node(tmp_path), "-y")
    assert launched.returncode == 0, launched.stderr
    failed, landed = _run_calls(bed)[:2]
    assert failed.error == "InsufficientInstanceCapacity" and landed.error is None
    assert _zone_of(bed, failed) != _zone_of(bed, landed) == _live(bed, "zones")[0]["zone"]
    tried = [line.split(" on aws/")[1].split()[0] for line in launched.stderr.splitlines()
             if line.startswith("Provisioning")]
    assert len(tried) == 2 and tried[0] != tried[1], launched.stderr
    assert f"landed in {tried[1].rsplit('/', 1)[1]}" in launched.stdout  # the catalog's zone ID
    assert "capacity" in launched.stderr and "InsufficientInstanceCapacity" in launched.stderr
    cost = _failed_attempt_cost(bed, failed)
    print(f"\nfailed zone attempt: {cost}")
    assert cost.startswith("1 RunInstances call(s)"), cost
    assert _live(bed) == _live(bed, "zones"), "the failed attempt left an instance"
    assert [g["tags"]["skyk-cluster"] for g in bed.security_groups() if "skyk-cluster" in g["tags"]] \
        == ["zones"], "the failed attempt left its security group"


def test_a_vcpu_quota_skips_the_rest_of_the_region(aws, bed, tmp_path):
    bed.fail("VcpuLimitExceeded", region=REGION, times=None)
    launched = aws("launch", "-c", "quota", _one_node(tmp_path, infra="aws"), "-y")
    assert launched.returncode == 0, launched.stderr
    runs = _run_calls(bed)
    assert runs[0].region == REGION and runs[0].error == "VcpuLimitExceeded"
    assert all(c.region != REGION for c in runs[1:]), [c.region for c in runs]
    assert runs[-1].error is None and _live(bed, "quota")[0]["region"] != REGION
    print(f"\nquota attempt: {_failed_attempt_cost(bed, runs[0])}")


def test_bad_credentials_skip_aws_for_the_next_cloud(aws, bed, tmp_path):
    # AWS first, the (credential-free) flaky test cloud second, in the task's own order.
    task = task_file(tmp_path, f"resources:\n  ordered:\n    - infra: aws/{REGION}\n"
                     "    - infra: flaky\n  cpus: 2\nrun: echo landed\n")
    moved = aws("launch", "-c", "creds", task, "-y",
                env={"AWS_ACCESS_KEY_ID": "AKIANOTAREALKEY00000", "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert moved.returncode == 0, moved.stderr
    tried = [line for line in moved.stderr.splitlines() if line.startswith("Provisioning")]
    assert len(tried) == 2 and " on aws/" in tried[0] and " on flaky/" in tried[1], moved.stderr
    assert "credentials" in moved.stderr and "AuthFailure" in moved.stderr
    assert "landed" in moved.stdout
    assert _live(bed) == []


def test_a_preempted_spot_cluster_shows_so_and_down_cleans_it(aws, bed, tmp_path):
    launched = aws("launch", "-c", "spot", _one_node(tmp_path), "--use-spot", "-y")
    assert launched.returncode == 0, launched.stderr
    (node,) = _live(bed, "spot")
    assert node["spot"] and node["shutdown_behavior"] == "terminate"
    bed.preempt(node["id"])
    shown_unsettled_then_down(aws, "spot", "preempted")
    _assert_nothing_left(bed, "spot")


def test_a_launch_killed_before_the_agent_started_is_cleaned_up_by_tag(aws, bed, tmp_path,
                                                                      shared_catalogs):
    kill_launch_waiting_for_ssh(bed, shared_catalogs,
                                "killed", _one_node(tmp_path))
    assert len(_live(bed, "killed")) == 1, "the instance should still exist"
    shown_unsettled_then_down(aws, "killed", "interrupted before the node agent started")
    assert _live(bed, "killed") == [] and _cluster_groups(bed, "killed") == []


def test_autostop_powers_the_nodes_off_and_aws_stops_them(aws, bed, tmp_path):
    task = task_file(tmp_path, f"num_nodes: 2\nresources:\n  infra: aws/{REGION}\n  cpus: 2+\nrun: echo hi\n")
    launched = aws("launch", "-c", "idle", task, "-y", "-i", "0")
    assert launched.returncode == 0, launched.stderr
    wait_for(lambda: {i["state"] for i in _live(bed, "idle")} == {"stopped"}, timeout=120,
             what="autostop to stop both instances")
    assert {i["state_reason"] for i in _live(bed, "idle")} == {"Client.InstanceInitiatedShutdown"}
    assert cluster_status(aws, "idle")["status"] == "STOPPED"


def test_autostop_down_powers_off_and_aws_terminates_then_status_forgets_it(aws, bed, tmp_path):
    launched = aws("launch", "-c", "gone", _one_node(tmp_path), "-y", "--down")
    assert launched.returncode == 0, launched.stderr
    wait_for(lambda: not _live(bed, "gone"), timeout=120, what="autostop --down to terminate it")
    assert cluster_status(aws, "gone") is None
    _assert_nothing_left(bed, "gone")


@pytest.mark.parametrize("case", ["unknown AMI", "region not enabled", "no default VPC", "bad ports"])
def test_bad_input_gets_one_clear_line_and_leaves_nothing(aws, bed, tmp_path, case):
    resources = {"unknown AMI": "  image_id: ami-0123456789abcdef0\n",
                 "region not enabled": "", "no default VPC": "", "bad ports": "  ports: 70000\n"}[case]
    region = "ap-east-1" if case == "region not enabled" else REGION
    if case == "region not enabled":
        bed.fail("OptInRequired", region=region, action=None, times=None)
    if case == "no default VPC":
        bed.remove_default_vpc(region)
    task = task_file(tmp_path, f"resources:\n  infra: aws/{region}\n  cpus: 2+\n{resources}run: echo hi\n")
    line = one_clear_line(aws("launch", "-c", "bad", task, "-y"))
    expected = {"unknown AMI": "ami-0123456789abcdef0", "region not enabled": "OptInRequired",
                "no default VPC": "default VPC", "bad ports": "70000"}[case]
    assert expected in line, line
    assert _live(bed) == [] and [g for g in bed.security_groups() if "skyk-cluster" in g["tags"]] == []
    assert cluster_status(aws, "bad", refresh=False) is None
    if case == "bad ports":
        assert bed.calls == [], "a task with bad ports reached AWS"


class TestAWSProvisioningContract(BedContract):
    """AWS passes the contract kit's provisioning tests on the test bed."""

    cloud_name = "aws"

    @pytest.fixture
    def offering(self) -> Offering:
        return Offering("aws", "t3.medium", 2.0, 4.0, REGION, "use1-az1", 0.0416, 0.0125)


def test_a_cloud_that_fails_neither_hides_other_clusters_nor_half_stops_one(aws, bed, tmp_path):
    launched = aws("launch", "-c", "kept", _one_node(tmp_path), "-y")
    assert launched.returncode == 0, launched.stderr
    local = aws("launch", "-c", "here", "echo local", "--cloud", "local", "-y")
    assert local.returncode == 0, local.stderr
    wrong = {"AWS_SECRET_ACCESS_KEY": "wrong"}

    shown = aws("status", "-r", env=wrong)
    assert shown.returncode == 2
    assert "here" in shown.stdout and "kept" in shown.stdout, "the table lists every cluster"
    (line,) = [x for x in shown.stderr.splitlines() if x.startswith("skyk: error:")]
    assert "AuthFailure" in line and "Traceback" not in shown.stderr

    stopped = aws("stop", "kept", "-y", env=wrong)
    assert stopped.returncode == 2 and "AuthFailure" in stopped.stderr
    # Nothing was half done: the cluster still runs jobs.
    ran = aws("exec", "kept", "echo still up")
    assert ran.returncode == 0 and "still up" in ran.stdout, ran.stderr
