"""The AWS test bed (tests/fakecloud): moto's EC2 behind our credential, fault, AMI and twin layer.

Driven with real boto3 clients pointed at the bed's endpoint, without retries,
so every call is one round trip. The node twins come from a stand-in host that
follows ``fakecloud.twins.TwinHost``'s API with addresses alone (no sandboxes).
"""

from __future__ import annotations

import base64
import csv
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from fakecloud import FakeEC2, Rule

REGION = "us-east-1"
TWIN_PRIVATE = ipaddress.ip_network("10.214.0.0/17")
TWIN_PUBLIC = ipaddress.ip_network("10.214.128.0/17")


# -- a stand-in for fakecloud.twins.TwinHost ---------------------------------------------


class StandInTwin:
    """A twin with addresses and a state, no sandbox."""

    def __init__(self, host: StandInTwinHost, name: str, user_data: str | None,
                 private_ip: str, public_ip: str):
        self._host = host
        self.name = name
        self.user_data = user_data
        self.private_ip = private_ip
        self.public_ip: str | None = public_ip
        self.state = "running"

    def stop(self) -> None:
        self.state, self.public_ip = "stopped", None

    def start(self) -> None:
        self.state, self.public_ip = "running", self._host.next_public_ip()

    def terminate(self) -> None:
        self.state, self.public_ip = "terminated", None

    def pids(self) -> list[int]:
        return []

    def run_shutdown(self) -> None:
        """What a node's ``shutdown`` does: it stops, and the host reports it."""
        self.stop()
        if self._host.on_shutdown is not None:
            self._host.on_shutdown(self)


class StandInTwinHost:
    """``TwinHost``'s API; ``boot_seconds`` delays create, ``broken`` makes it fail."""

    def __init__(self, root: Path, *, bridge: str = "skykfc0", subnet: str = "10.214.0.0/16",
                 on_shutdown=None, boot_seconds: float = 0.0):
        self.root = root
        self.on_shutdown = on_shutdown
        self.boot_seconds = boot_seconds
        self.broken = False
        self._lock = threading.Lock()
        self._private = TWIN_PRIVATE.hosts()
        self._public = TWIN_PUBLIC.hosts()
        self._twins: list[StandInTwin] = []

    def next_public_ip(self) -> str:
        with self._lock:
            return str(next(self._public))

    def create(self, name: str, user_data: str | None) -> StandInTwin:
        time.sleep(self.boot_seconds)
        if self.broken:
            raise OSError("sshd did not start")
        with self._lock:
            twin = StandInTwin(self, name, user_data, str(next(self._private)),
                               str(next(self._public)))
            self._twins.append(twin)
        return twin

    def twins(self) -> list[StandInTwin]:
        with self._lock:
            return list(self._twins)

    def twin(self, name: str) -> StandInTwin:
        return next(t for t in self.twins() if t.name == name)

    def close(self) -> None:
        for twin in self.twins():
            twin.terminate()


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture(scope="session")
def catalog_images(shared_catalogs) -> dict[tuple[str, str], str]:
    """(region, tag) -> ImageId of the real catalog."""
    with (shared_catalogs / "aws" / "images.csv").open(newline="") as f:
        return {(row["Region"], row["Tag"]): row["ImageId"] for row in csv.DictReader(f)}


@pytest.fixture
def ami(catalog_images) -> str:
    return catalog_images[(REGION, "skypilot:custom-cpu-ubuntu")]


@pytest.fixture
def ec2(shared_catalogs):
    with FakeEC2(catalog_dir=shared_catalogs) as bed:
        yield bed


@pytest.fixture
def host(tmp_path):
    twins = StandInTwinHost(tmp_path / "twins")
    yield twins
    twins.close()


@pytest.fixture
def twin_ec2(shared_catalogs, host):
    with FakeEC2(twins=host, catalog_dir=shared_catalogs) as bed:
        yield bed
        assert bed.errors == []


def client(bed: FakeEC2, region: str = REGION, **keys: str):
    """A plain boto3 client on the bed's endpoint: one attempt per call.

    ``total_max_attempts`` rather than ``max_attempts``: botocore's
    ``max_attempts`` counts retries after the first try, so 1 would still
    send a failed call twice.
    """
    return boto3.client("ec2", region_name=region, endpoint_url=bed.endpoint,
                        aws_access_key_id=keys.get("key", bed.access_key),
                        aws_secret_access_key=keys.get("secret", bed.secret_key),
                        config=Config(retries={"total_max_attempts": 1}))


def run(c, ami: str, **kwargs):
    kwargs.setdefault("InstanceType", "t3.micro")
    return c.run_instances(ImageId=ami, MinCount=kwargs.pop("count", 1),
                           MaxCount=kwargs.pop("count_max", 1), **kwargs)


def error_of(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def describe(c, instance_id: str) -> dict:
    return c.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def addresses(document) -> set[str]:
    """Every IPv4 address anywhere in a boto3 response."""
    found: set[str] = set()

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            try:
                found.add(str(ipaddress.IPv4Address(value)))
            except ValueError:
                pass

    walk(document)
    return found


def twin_addresses_only(document) -> None:
    """No address in the response is moto's: each one belongs to a twin."""
    for address in addresses(document):
        ip = ipaddress.IPv4Address(address)
        assert ip in TWIN_PRIVATE or ip in TWIN_PUBLIC, f"{address} is not a twin's address"


# -- credentials ---------------------------------------------------------------------------


def test_only_the_beds_access_key_and_secret_are_accepted(ec2):
    assert client(ec2).describe_vpcs()["Vpcs"]
    assert error_of(lambda: client(ec2, key="AKIAIOSFODNN7EXAMPLE").describe_vpcs()) == \
        ("AuthFailure", 401)
    assert error_of(lambda: client(ec2, secret="not-the-secret").describe_vpcs()) == \
        ("AuthFailure", 401)
    assert [(c.action, c.error) for c in ec2.calls] == [
        ("DescribeVpcs", None), ("DescribeVpcs", "AuthFailure"), ("DescribeVpcs", "AuthFailure")]


def test_a_region_ec2_does_not_have_is_refused(ec2):
    assert error_of(lambda: client(ec2, region="xx-nowhere-1").describe_vpcs()) == \
        ("AuthFailure", 401)


def test_env_is_all_a_subprocess_needs(ec2, tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **ec2.env()}
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert Path(env["AWS_CONFIG_FILE"]).read_text() == ""
    script = ("import boto3, json; c = boto3.client('ec2');"
              "print(json.dumps([v['IsDefault'] for v in c.describe_vpcs()['Vpcs']]))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True]
    assert ec2.calls[-1].region == REGION


def test_beds_are_independent_moto_accounts(shared_catalogs, ami):
    with FakeEC2(catalog_dir=shared_catalogs) as one, \
            FakeEC2(catalog_dir=shared_catalogs) as two:
        instance_id = run(client(one), ami)["Instances"][0]["InstanceId"]
        assert [i["id"] for i in one.instances()] == [instance_id]
        assert two.instances() == []
        assert client(two).describe_instances()["Reservations"] == []
    from moto.ec2.models import ec2_backends
    assert one.account_id not in ec2_backends.keys()


# -- faults --------------------------------------------------------------------------------


def test_a_rule_answers_once_then_moto_answers(ec2, ami):
    c = client(ec2)
    rule = ec2.fail("InsufficientInstanceCapacity")
    assert isinstance(rule, Rule)
    assert error_of(lambda: run(c, ami)) == ("InsufficientInstanceCapacity", 500)
    assert run(c, ami)["Instances"][0]["InstanceId"].startswith("i-")
    assert rule.hits == 1 and rule.exhausted
    faulted = [c.fault for c in ec2.calls if c.action == "RunInstances"]
    assert faulted == [True, False]
    assert len(ec2.instances()) == 1


def test_a_rule_answers_n_times_or_always(ec2, ami):
    c = client(ec2)
    ec2.fail("VcpuLimitExceeded", times=2)
    assert [error_of(lambda: run(c, ami))[0] for _ in range(2)] == ["VcpuLimitExceeded"] * 2
    run(c, ami)
    always = ec2.fail("Unavailable", action=None, times=None)
    for _ in range(5):
        assert error_of(c.describe_vpcs) == ("Unavailable", 503)
    assert always.hits == 5 and not always.exhausted
    ec2.clear_faults()
    assert c.describe_vpcs()["Vpcs"]


def test_the_first_matching_rule_with_times_left_answers(ec2, ami):
    c = client(ec2)
    ec2.fail("VcpuLimitExceeded")
    ec2.fail("InsufficientInstanceCapacity", times=None)
    assert [error_of(lambda: run(c, ami))[0] for _ in range(3)] == [
        "VcpuLimitExceeded", "InsufficientInstanceCapacity", "InsufficientInstanceCapacity"]


@pytest.mark.parametrize(("code", "status"), [
    ("InsufficientInstanceCapacity", 500),
    ("InternalError", 500),
    ("Unavailable", 503),
    ("RequestLimitExceeded", 503),
    ("VcpuLimitExceeded", 400),
    ("InstanceLimitExceeded", 400),
    ("MaxSpotInstanceCountExceeded", 400),
    ("AuthFailure", 401),
    ("OptInRequired", 401),
    ("UnauthorizedOperation", 403),
])
def test_injected_codes_parse_into_client_errors_with_ec2s_status(ec2, ami, code, status):
    ec2.fail(code, message=f"injected {code}")
    with pytest.raises(ClientError) as info:
        run(client(ec2), ami)
    error = info.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    assert error["Error"]["Message"] == f"injected {code}"
    assert error["ResponseMetadata"]["RequestId"]
    assert ec2.calls[-1].status == status and ec2.calls[-1].error == code


def test_rules_match_zone_type_spot_and_region(ec2, ami, catalog_images):
    c = client(ec2)
    subnets = {s["AvailabilityZone"]: s["SubnetId"] for s in c.describe_subnets()["Subnets"]}
    ec2.fail("InsufficientInstanceCapacity", zone="us-east-1b", times=None)
    ec2.fail("InsufficientInstanceCapacity", instance_type="p4d.24xlarge", times=None)
    ec2.fail("MaxSpotInstanceCountExceeded", spot=True, times=None)
    ec2.fail("OptInRequired", region="eu-west-1", times=None)
    spot = {"InstanceMarketOptions": {"MarketType": "spot"}}

    assert error_of(lambda: run(c, ami, Placement={"AvailabilityZone": "us-east-1b"}))[0] == \
        "InsufficientInstanceCapacity"
    assert error_of(lambda: run(c, ami, SubnetId=subnets["us-east-1b"]))[0] == \
        "InsufficientInstanceCapacity"
    nic = [{"DeviceIndex": 0, "SubnetId": subnets["us-east-1b"]}]
    assert error_of(lambda: run(c, ami, NetworkInterfaces=nic))[0] == \
        "InsufficientInstanceCapacity"
    run(c, ami, SubnetId=subnets["us-east-1a"])
    run(c, ami, Placement={"AvailabilityZone": "us-east-1c"})

    assert error_of(lambda: run(c, ami, InstanceType="p4d.24xlarge"))[0] == \
        "InsufficientInstanceCapacity"
    run(c, ami, InstanceType="p3.2xlarge")

    assert error_of(lambda: run(c, ami, **spot))[0] == "MaxSpotInstanceCountExceeded"
    run(c, ami)  # on-demand passes

    eu_ami = catalog_images[("eu-west-1", "skypilot:custom-cpu-ubuntu")]
    assert error_of(lambda: run(client(ec2, "eu-west-1"), eu_ami))[0] == "OptInRequired"
    # A rule for RunInstances leaves other actions alone.
    assert c.describe_instances()["Reservations"]


def test_spot_false_matches_on_demand_only(ec2, ami):
    c = client(ec2)
    ec2.fail("InsufficientInstanceCapacity", spot=False, times=None)
    run(c, ami, InstanceMarketOptions={"MarketType": "spot"})
    assert error_of(lambda: run(c, ami))[0] == "InsufficientInstanceCapacity"


def test_calls_record_every_request_without_secrets(ec2, ami):
    c = client(ec2)
    user_data = base64.b64encode(b"#!/bin/sh\necho secret-token\n").decode()
    ec2.fail("InsufficientInstanceCapacity", zone="us-east-1a")
    error_of(lambda: run(c, ami, Placement={"AvailabilityZone": "us-east-1a"},
                         UserData="#!/bin/sh\necho secret-token\n"))
    instance_id = run(c, ami, UserData="#!/bin/sh\necho secret-token\n")[
        "Instances"][0]["InstanceId"]
    c.describe_instances(InstanceIds=[instance_id])
    c.terminate_instances(InstanceIds=[instance_id])
    calls = ec2.calls
    assert [(x.action, x.error, x.fault) for x in calls] == [
        ("RunInstances", "InsufficientInstanceCapacity", True),
        ("RunInstances", None, False),
        ("DescribeInstances", None, False),
        ("TerminateInstances", None, False),
    ]
    assert all(x.region == REGION and x.time > 0 and x.duration >= 0 for x in calls)
    assert calls[0].params["Placement.AvailabilityZone"] == "us-east-1a"
    assert calls[2].params == {"InstanceId.1": instance_id}
    for call in calls[:2]:
        assert "secret-token" not in repr(call) and user_data not in repr(call)
        assert call.params["UserData"].startswith("<")


# -- AMIs ----------------------------------------------------------------------------------


def test_catalog_images_exist_with_their_ids(ec2, catalog_images):
    arm = catalog_images[("eu-west-1", "skypilot:custom-gpu-ubuntu-arm64")]
    image = client(ec2, "eu-west-1").describe_images(ImageIds=[arm])["Images"][0]
    assert image["ImageId"] == arm and image["Architecture"] == "arm64"
    assert image["Name"] == "skypilot:custom-gpu-ubuntu-arm64"


def test_unknown_or_malformed_ami_is_refused_as_ec2_does(ec2, ami, catalog_images):
    c = client(ec2)
    assert error_of(lambda: run(c, "ami-0123456789abcdef0")) == ("InvalidAMIID.NotFound", 400)
    assert error_of(lambda: run(c, "ubuntu-22.04")) == ("InvalidAMIID.Malformed", 400)
    # Another region's image is unknown here, as on EC2.
    other = catalog_images[("eu-west-1", "skypilot:custom-cpu-ubuntu")]
    assert error_of(lambda: run(c, other)) == ("InvalidAMIID.NotFound", 400)
    assert ec2.instances() == []
    assert run(c, ami)["Instances"][0]["ImageId"] == ami


def test_an_arm_image_on_an_x86_type_is_refused(ec2, catalog_images):
    arm = catalog_images[(REGION, "skypilot:custom-cpu-ubuntu-arm64")]
    assert error_of(lambda: run(client(ec2), arm, InstanceType="m5.large")) == \
        ("InvalidParameterValue", 400)
    run(client(ec2), arm, InstanceType="m6g.large")


def test_user_data_over_16_kib_is_refused(ec2, ami):
    assert error_of(lambda: run(client(ec2), ami, UserData="x" * 16385)) == \
        ("InvalidParameterValue", 400)


def test_the_catalogs_images_are_the_only_ones(ec2, catalog_images, tmp_path, ami):
    images = client(ec2, "eu-west-1").describe_images()["Images"]
    assert sorted(i["ImageId"] for i in images) == sorted(
        image for (region, _), image in catalog_images.items() if region == "eu-west-1" and image)
    assert {i["OwnerId"] for i in images} == {"111122223333"}
    with FakeEC2(catalog_dir=tmp_path) as bare:
        assert client(bare).describe_images()["Images"] == []
        assert error_of(lambda: run(client(bare), ami)) == ("InvalidAMIID.NotFound", 400)


# -- instances without twins ---------------------------------------------------------------


def test_pure_moto_preempt_and_state_checks(ec2, ami):
    c = client(ec2)
    spot = run(c, ami, InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]["InstanceId"]
    on_demand = run(c, ami)["Instances"][0]["InstanceId"]
    with pytest.raises(ValueError):
        ec2.preempt(on_demand)
    with pytest.raises(KeyError):
        ec2.preempt("i-0123456789abcdef0")
    ec2.preempt(spot)
    seen = describe(c, spot)
    assert seen["State"]["Name"] == "terminated"
    assert seen["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert seen["StateReason"]["Message"] == \
        "Server.SpotInstanceTermination: Spot instance termination"
    assert error_of(lambda: c.start_instances(InstanceIds=[spot])) == \
        ("IncorrectInstanceState", 400)
    facts = {i["id"]: i for i in ec2.instances(REGION)}
    assert facts[spot]["spot"] and facts[spot]["state_reason"] == "Server.SpotInstanceTermination"
    assert not facts[on_demand]["spot"] and facts[on_demand]["state"] == "running"


def test_security_groups_are_listed_for_assertions(ec2):
    c = client(ec2)
    group = c.create_security_group(GroupName="skyk-web", Description="web")["GroupId"]
    c.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    groups = {g["name"]: g for g in ec2.security_groups(REGION)}
    assert set(groups) == {"default", "skyk-web"}
    assert groups["skyk-web"]["ingress"] == [
        {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "0.0.0.0/0", "group": None}]


def test_remove_default_vpc(ec2, ami):
    c = client(ec2)
    ec2.remove_default_vpc(REGION)
    assert c.describe_vpcs()["Vpcs"] == []
    assert c.describe_subnets()["Subnets"] == []
    assert error_of(lambda: run(c, ami)) == ("VPCIdNotSpecified", 400)
    assert error_of(lambda: c.create_security_group(GroupName="g", Description="d")) == \
        ("VPCIdNotSpecified", 400)
    # Other regions keep theirs.
    assert client(ec2, "us-west-2").describe_vpcs()["Vpcs"][0]["IsDefault"]


# -- instances with twins ------------------------------------------------------------------


def test_run_instances_boots_a_twin_per_instance_and_answers_with_its_addresses(
        twin_ec2, host, ami):
    c = client(twin_ec2)
    script = "#cloud-config\nusers:\n  - name: skyk\n"
    response = run(c, ami, count=2, count_max=2, UserData=script,
                   TagSpecifications=[{"ResourceType": "instance",
                                       "Tags": [{"Key": "skyk-cluster", "Value": "c1"}]}])
    twin_addresses_only(response)
    launched = response["Instances"]
    assert [i["State"]["Name"] for i in launched] == ["pending", "pending"]
    ids = [i["InstanceId"] for i in launched]
    assert sorted(t.name for t in host.twins()) == sorted(ids)
    for instance in launched:
        twin = host.twin(instance["InstanceId"])
        assert twin.user_data == script
        assert instance["PrivateIpAddress"] == twin.private_ip
        assert instance["NetworkInterfaces"][0]["PrivateIpAddress"] == twin.private_ip
    described = c.describe_instances(
        Filters=[{"Name": "tag:skyk-cluster", "Values": ["c1"]}])
    twin_addresses_only(described)
    for instance in (i for r in described["Reservations"] for i in r["Instances"]):
        twin = host.twin(instance["InstanceId"])
        assert instance["State"]["Name"] == "running"
        assert instance["PrivateIpAddress"] == twin.private_ip
        assert instance["PublicIpAddress"] == twin.public_ip
        assert instance["NetworkInterfaces"][0]["Association"]["PublicIp"] == twin.public_ip
    twin_addresses_only(c.describe_network_interfaces())
    facts = {i["id"]: i for i in twin_ec2.instances()}
    assert {facts[i]["private_ip"] for i in ids} == {host.twin(i).private_ip for i in ids}
    assert facts[ids[0]]["tags"] == {"skyk-cluster": "c1"}


def test_no_public_address_where_ec2_would_give_none(twin_ec2, host, ami):
    c = client(twin_ec2)
    subnet = c.describe_subnets()["Subnets"][0]["SubnetId"]
    nic = [{"DeviceIndex": 0, "SubnetId": subnet, "AssociatePublicIpAddress": False}]
    instance_id = run(c, ami, NetworkInterfaces=nic)["Instances"][0]["InstanceId"]
    seen = describe(c, instance_id)
    assert "PublicIpAddress" not in seen
    assert seen["PrivateIpAddress"] == host.twin(instance_id).private_ip


def test_stop_and_start_give_a_new_public_address(twin_ec2, host, ami):
    c = client(twin_ec2)
    instance_id = run(c, ami)["Instances"][0]["InstanceId"]
    twin = host.twin(instance_id)
    first_public, private = twin.public_ip, twin.private_ip
    c.stop_instances(InstanceIds=[instance_id])
    stopped = describe(c, instance_id)
    assert stopped["State"]["Name"] == "stopped" and twin.state == "stopped"
    assert "PublicIpAddress" not in stopped
    c.start_instances(InstanceIds=[instance_id])
    started = describe(c, instance_id)
    twin_addresses_only(started)
    assert twin.state == "running"
    assert started["PublicIpAddress"] == twin.public_ip != first_public
    assert started["PrivateIpAddress"] == private
    c.terminate_instances(InstanceIds=[instance_id])
    assert describe(c, instance_id)["State"]["Name"] == "terminated"
    assert twin.state == "terminated"


def test_preempt_terminates_instance_and_twin(twin_ec2, host, ami):
    c = client(twin_ec2)
    instance_id = run(c, ami, InstanceMarketOptions={"MarketType": "spot"})[
        "Instances"][0]["InstanceId"]
    twin_ec2.preempt(instance_id)
    seen = describe(c, instance_id)
    assert seen["State"]["Name"] == "terminated"
    assert seen["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    assert host.twin(instance_id).state == "terminated"
    twin_addresses_only(seen)


@pytest.mark.parametrize("how", ["default", "run-parameter", "modify-attribute"])
def test_a_shutdown_on_the_node_stops_or_terminates_the_instance(twin_ec2, host, ami, how):
    c = client(twin_ec2)
    extra = {"InstanceInitiatedShutdownBehavior": "terminate"} if how == "run-parameter" else {}
    group = c.create_security_group(GroupName="skyk-c1", Description="c1")["GroupId"]
    instance_id = run(c, ami, SecurityGroupIds=[group], **extra)["Instances"][0]["InstanceId"]
    if how == "modify-attribute":
        c.modify_instance_attribute(InstanceId=instance_id,
                                    InstanceInitiatedShutdownBehavior={"Value": "terminate"})
        assert c.describe_instance_attribute(
            InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior",
        )["InstanceInitiatedShutdownBehavior"] == {"Value": "terminate"}
    groups = describe(c, instance_id)["SecurityGroups"]
    assert [g["GroupId"] for g in groups] == [group]
    expected = "stopped" if how == "default" else "terminated"
    host.twin(instance_id).run_shutdown()
    twin_ec2.settle()
    seen = describe(c, instance_id)
    assert seen["State"]["Name"] == expected
    assert seen["StateReason"] == {
        "Code": "Client.InstanceInitiatedShutdown",
        "Message": "Client.InstanceInitiatedShutdown: Instance initiated shutdown"}
    assert host.twin(instance_id).state == expected
    assert seen["SecurityGroups"] == groups  # moto alone would have emptied them
    fact = next(i for i in twin_ec2.instances() if i["id"] == instance_id)
    assert fact["shutdown_behavior"] == ("stop" if how == "default" else "terminate")
    if expected == "stopped":
        c.start_instances(InstanceIds=[instance_id])
        assert describe(c, instance_id)["PublicIpAddress"] == host.twin(instance_id).public_ip


def test_a_shutdown_behaviour_other_than_stop_or_terminate_is_refused(ec2, ami):
    c = client(ec2)
    assert error_of(lambda: run(c, ami, InstanceInitiatedShutdownBehavior="hibernate")) == \
        ("InvalidParameterValue", 400)
    instance_id = run(c, ami)["Instances"][0]["InstanceId"]
    assert error_of(lambda: c.modify_instance_attribute(
        InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": "halt"})) == \
        ("InvalidParameterValue", 400)


def test_launch_paths_that_bypass_twins_are_refused(twin_ec2):
    c = client(twin_ec2)
    assert error_of(lambda: c.request_spot_instances(InstanceCount=1, LaunchSpecification={
        "ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})) == ("UnsupportedOperation", 400)
    assert twin_ec2.instances() == []


def test_the_host_is_wired_to_the_bed_when_built_without_on_shutdown(twin_ec2, host):
    assert host.on_shutdown == twin_ec2.twin_shut_down


def test_a_twin_that_does_not_boot_fails_the_launch_as_an_internal_error(
        shared_catalogs, host, ami):
    host.broken = True
    with FakeEC2(twins=host, catalog_dir=shared_catalogs) as bed:
        assert error_of(lambda: run(client(bed), ami)) == ("InternalError", 500)
        assert [i["state"] for i in bed.instances()] == ["terminated"]
        assert "sshd did not start" in bed.errors[0]


def test_no_answer_shows_moto_addresses_while_twins_boot(shared_catalogs, tmp_path, ami):
    """Launches from several threads, with DescribeInstances polled all along."""
    slow = StandInTwinHost(tmp_path, boot_seconds=0.2)
    with FakeEC2(twins=slow, catalog_dir=shared_catalogs) as bed:
        done = threading.Event()
        seen: list[dict] = []
        failures: list[BaseException] = []

        def poll():
            c = client(bed)
            while not done.is_set():
                seen.append(c.describe_instances())

        def launch():
            try:
                twin_addresses_only(run(client(bed), ami, count=2, count_max=2))
            except BaseException as exc:  # reported below
                failures.append(exc)

        poller = threading.Thread(target=poll)
        poller.start()
        launchers = [threading.Thread(target=launch) for _ in range(3)]
        for thread in launchers:
            thread.start()
        for thread in launchers:
            thread.join()
        done.set()
        poller.join()
        assert failures == []
        # How many polls land during the boots depends on the machine's load; each must be clean.
        assert seen
        for document in seen:
            twin_addresses_only(document)
        privates = [i["private_ip"] for i in bed.instances()]
        assert len(privates) == 6 and len(set(privates)) == 6
        assert bed.errors == []
