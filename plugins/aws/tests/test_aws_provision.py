"""Provisioning on AWS against the test bed's EC2 (moto's server, no node twins): launch, tags, images, zones, stop/start, cleanup.

Nothing here dials a node: moto's public addresses are made up, so
``wait_ready`` (SSH) is never called.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools

import pytest
import yaml
from botocore.exceptions import ClientError
from skyk.catalog.offering import Offering
from skyk.errors import SkykError
from skyk.provision.ssh_cloud import cloud_config
from skyk.provision.ssh_keys import user_key
from skyk.provision.types import ProvisionAttempt, ProvisionError, ProvisionRequest
from skyk_aws import images, instances, security_groups, session, tags, zones
from skyk_aws.cloud import AWSCloud
from skyk_aws.vpcs import VPC_ENV

#: the region the conftest's catalog has images for, and one with a single CPU image
REGION = "us-east-1"
OTHER_REGION = "eu-west-3"
CPU = Offering("aws", "m6i.large", 2, 8, REGION, "use1-az1", 0.096, 0.03)
GPU = Offering("aws", "g5.xlarge", 4, 16, REGION, "use1-az2", 1.006, 0.4, "A10G", 1.0)
#: moto's zone names for REGION by zone ID (its account's shuffle)
ZONE_NAMES = {"use1-az1": "us-east-1b", "use1-az2": "us-east-1c"}

_uids = (f"{n:08x}" for n in itertools.count(0xA0000000))


def request(cluster: str, offering: Offering = CPU, **fields) -> ProvisionRequest:
    """A request with a fresh uid."""
    return ProvisionRequest(cluster=cluster, uid=next(_uids), num_nodes=fields.pop("num_nodes", 1),
                            offering=offering, **fields)


def of_attempt(client, uid: str, region: str = REGION) -> list[dict]:
    """The instances tagged with attempt ``uid`` that are not terminated."""
    answer = client.describe_instances(Filters=[{"Name": f"tag:{tags.ATTEMPT}", "Values": [uid]}])
    return [i for r in answer["Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def groups_of_attempt(client, uid: str) -> list[dict]:
    return client.describe_security_groups(
        Filters=[{"Name": f"tag:{tags.ATTEMPT}", "Values": [uid]}])["SecurityGroups"]


def tag_dict(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


@pytest.fixture
def sent(aws):
    """Each RunInstances call's parameters, as the plugin sent them (its client's own events)."""
    calls: list[dict] = []
    events = session.ec2(REGION).meta.events

    def record(params, **_):
        calls.append(dict(params))

    events.register("provide-client-params.ec2.RunInstances", record, unique_id="test-sent")
    yield calls
    events.unregister("provide-client-params.ec2.RunInstances", unique_id="test-sent")


@pytest.fixture
def cloud(aws):
    made: list = []
    cloud = AWSCloud()
    original = cloud.provision

    def provision(req):
        handle = original(req)
        made.append(handle)
        return handle

    cloud.provision = provision
    yield cloud
    for handle in made:
        cloud.terminate(handle)


def test_one_node_is_tagged_with_its_cluster_and_attempt(cloud, aws, sent):
    req = request("solo", ports=(8000, 8001, 8080))
    handle = cloud.provision(req)
    assert (handle.cloud, handle.region, handle.zone, handle.instance_type) == ("aws", REGION, "use1-az1", "m6i.large")
    assert handle.hourly_price == 0.096 and not handle.use_spot
    [node] = handle.nodes
    [instance] = of_attempt(aws, req.uid)
    assert node.node_id == instance["InstanceId"] == handle.extra["instance_ids"][0]
    assert (node.internal_ip, node.external_ip) == (instance["PrivateIpAddress"], instance["PublicIpAddress"])
    assert node.runner["user"] == "ubuntu" and node.runner["host"] == instance["PublicIpAddress"]
    assert instance["Placement"]["AvailabilityZone"] == ZONE_NAMES["use1-az1"] == handle.extra["zone_name"]
    assert tag_dict(instance) == {"skyk-cluster": "solo", "skyk-attempt": req.uid, "Name": "skyk-solo",
                                  "skyk-node-rank": "0"}
    [volume] = aws.describe_volumes(Filters=[{"Name": f"tag:{tags.ATTEMPT}", "Values": [req.uid]}])["Volumes"]
    assert volume["Size"] == instances.DEFAULT_DISK_GIB and volume["VolumeType"] == "gp3"
    assert tag_dict(volume)["skyk-cluster"] == "solo"
    # The security group: the attempt's, SSH and the task's ports from anywhere.
    [group] = groups_of_attempt(aws, req.uid)
    assert group["GroupId"] == handle.extra["security_group_id"]
    assert group["GroupName"] == f"skyk-solo-{req.uid}" and group["VpcId"] == handle.extra["vpc_id"]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group["GroupId"]]
    rules = {(p["FromPort"], p["ToPort"], p["IpProtocol"], p["IpRanges"][0]["CidrIp"]) for p in group["IpPermissions"]}
    assert rules == {(22, 22, "tcp", "0.0.0.0/0"), (8000, 8001, "tcp", "0.0.0.0/0"), (8080, 8080, "tcp", "0.0.0.0/0")}
    # The user data makes the image's user with skyk's key; a node's poweroff stops it.
    data = aws.describe_instance_attribute(InstanceId=node.node_id, Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(data).decode()
    assert text == cloud_config("ubuntu", user_key())
    [user] = yaml.safe_load(text)["users"]
    assert (user["name"], user["ssh_authorized_keys"]) == ("ubuntu", [user_key().public])
    assert _shutdown_behaviour(aws, node.node_id) == "stop"
    [params] = sent
    assert params["MinCount"] == params["MaxCount"] == 1
    assert params["ClientToken"] == instances.client_token("solo", req.uid)
    assert "InstanceMarketOptions" not in params
    assert params["BlockDeviceMappings"][0]["Ebs"] == {"VolumeSize": 256, "VolumeType": "gp3", "Iops": 3500,
                                                       "Throughput": 250, "DeleteOnTermination": True}


def _shutdown_behaviour(client, instance_id: str) -> str:
    return client.describe_instance_attribute(InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior"
                                              )["InstanceInitiatedShutdownBehavior"]["Value"]


def test_three_nodes_come_from_one_call_ranked_by_launch_index(cloud, aws, sent):
    req = request("trio", num_nodes=3)
    handle = cloud.provision(req)
    made = {i["InstanceId"]: i for i in of_attempt(aws, req.uid)}
    assert len(made) == 3 and len(sent) == 1 and sent[0]["MinCount"] == sent[0]["MaxCount"] == 3
    assert [made[n.node_id]["AmiLaunchIndex"] for n in handle.nodes] == [0, 1, 2]
    assert [tag_dict(made[n.node_id])["skyk-node-rank"] for n in handle.nodes] == ["0", "1", "2"]
    assert handle.extra["instance_ids"] == [n.node_id for n in handle.nodes]
    assert cloud.query(handle) == ["running"] * 3
    # Each worker is reached from the head on its private address with the head's copy of the
    # key; the head runs its own share directly.
    assert [n.internal_runner.get("host") for n in handle.nodes] == [
        None, *(made[n.node_id]["PrivateIpAddress"] for n in handle.nodes[1:])]
    assert handle.nodes[0].internal_runner["kind"] == "local"


def _throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}},
                       operation)


@contextlib.contextmanager
def _throttled_once(event: str):
    """Make the plugin's client raise a throttling error once, at botocore's ``event``."""
    events = session.ec2(REGION).meta.events
    failures = iter([True])

    def throttle(**_):
        if next(failures, False):
            raise _throttled("RunInstances")

    events.register(event, throttle, unique_id="test-throttle")
    try:
        yield
    finally:
        events.unregister(event, unique_id="test-throttle")


def test_a_run_answered_with_an_error_after_making_the_set_makes_no_second(cloud, aws, sent):
    # EC2 made the instances, but the answer the client saw was an error:
    # the retry must not make a second set.
    req = request("lost", num_nodes=2)
    with _throttled_once("after-call.ec2.RunInstances"):
        handle = cloud.provision(req)
    made = of_attempt(aws, req.uid)
    assert len(made) == 2 and sorted(i["InstanceId"] for i in made) == sorted(n.node_id for n in handle.nodes)
    assert {i["ClientToken"] for i in made} == {instances.client_token("lost", req.uid)}
    assert all(p["ClientToken"] == instances.client_token("lost", req.uid) for p in sent)


def test_a_throttled_run_is_retried_with_the_same_client_token(cloud, aws, sent):
    req = request("throttled", num_nodes=2)
    with _throttled_once("before-send.ec2.RunInstances"):
        handle = cloud.provision(req)
    assert len(sent) == 2 and sent[0]["ClientToken"] == sent[1]["ClientToken"]
    assert len(of_attempt(aws, req.uid)) == 2 == len(handle.nodes)


def test_spot_nodes_terminate_on_interruption_and_cannot_stop(cloud, aws, sent):
    req = request("spotty", use_spot=True)
    handle = cloud.provision(req)
    assert handle.use_spot and handle.hourly_price == 0.03
    [params] = sent
    assert params["InstanceMarketOptions"] == {
        "MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    [instance] = of_attempt(aws, req.uid)
    assert instance["InstanceLifecycle"] == "spot"
    assert _shutdown_behaviour(aws, instance["InstanceId"]) == "terminate"
    with pytest.raises(SkykError, match="spot instances, which AWS cannot stop"):
        cloud.stop(handle)
    cloud.prepare_autostop(handle, down=False)  # a spot node can only go away
    assert _shutdown_behaviour(aws, instance["InstanceId"]) == "terminate"


def test_autostop_sets_what_a_nodes_poweroff_does(cloud, aws):
    handle = cloud.provision(request("auto", num_nodes=2))
    cloud.prepare_autostop(handle, down=True)
    assert {_shutdown_behaviour(aws, n.node_id) for n in handle.nodes} == {"terminate"}
    cloud.prepare_autostop(handle, down=False)
    assert {_shutdown_behaviour(aws, n.node_id) for n in handle.nodes} == {"stop"}


def test_disk_size_and_tier_shape_the_root_volume(cloud, aws, sent):
    req = request("disky", disk_size=100, disk_tier="high")
    handle = cloud.provision(req)
    [params] = sent
    [mapping] = params["BlockDeviceMappings"]
    image = aws.describe_images(ImageIds=[handle.extra["image_id"]])["Images"][0]
    assert mapping["DeviceName"] == image["RootDeviceName"]
    assert mapping["Ebs"] == {"VolumeSize": 100, "VolumeType": "gp3", "Iops": 6000, "Throughput": 400,
                              "DeleteOnTermination": True}
    [volume] = aws.describe_volumes(Filters=[{"Name": f"tag:{tags.ATTEMPT}", "Values": [req.uid]}])["Volumes"]
    assert volume["Size"] == 100


def test_gp3_limits_cap_a_small_disks_speed():
    image = images.Image("ami-1", "/dev/sda1", 8, "x86_64")
    assert instances.root_volume(image, 8, "best")["Ebs"] | {} == {
        "VolumeSize": 8, "VolumeType": "gp3", "Iops": 4000, "Throughput": 1000, "DeleteOnTermination": True}
    assert instances.root_volume(image, 2000, "low")["Ebs"]["Iops"] == 3000
    with pytest.raises(ProvisionError, match="smaller than AMI ami-1's 8 GiB root snapshot"):
        instances.root_volume(image, 4, None)


def test_zone_ids_map_to_this_accounts_zone_names(aws):
    ec2 = session.ec2(REGION)
    for zone_id, name in ZONE_NAMES.items():
        assert zones.zone_name(ec2, REGION, zone_id) == name


def test_a_zone_the_account_lacks_fails_that_zone_before_anything_is_made(cloud, aws, sent):
    req = request("nozone", CPU._replace(zone="use1-az9"))
    with pytest.raises(ProvisionError) as failure:
        cloud.provision(req)
    assert (failure.value.kind, failure.value.scope) == ("unsupported", "zone")
    assert "zone use1-az9 is not available to this AWS account in us-east-1" in failure.value.reason
    assert sent == [] and groups_of_attempt(aws, req.uid) == []


def test_images_come_from_the_catalog_by_accelerator_and_architecture(moto_images, catalog):
    assert images.default_tag(CPU) == "skypilot:custom-cpu-ubuntu"
    assert images.default_tag(GPU) == "skypilot:custom-gpu-ubuntu"
    assert images.default_tag(CPU._replace(instance_type="m7g.large")) == "skypilot:custom-cpu-ubuntu-arm64"
    assert images.default_tag(GPU._replace(instance_type="g5g.xlarge")) == "skypilot:custom-gpu-ubuntu-arm64"
    assert images.default_tag(GPU._replace(instance_type="inf2.xlarge", accelerator="Inferentia2")
                              ) == "skypilot:neuron-ubuntu-2204"
    for arm in ("a1.large", "c6gn.large", "r6gd.large", "t4g.micro", "im4gn.large", "is4gen.large", "x2gd.large"):
        assert images.architecture(arm) == "arm64", arm
    for x86 in ("g4dn.xlarge", "gr6.4xlarge", "p5en.48xlarge", "m6i.large", "p6-b200.48xlarge", "inf2.xlarge"):
        assert images.architecture(x86) == "x86_64", x86
    # The newest row with an AMI wins.
    assert images.catalog_image("skypilot:custom-cpu-ubuntu", REGION, catalog) == moto_images[1]
    assert images.catalog_image("skypilot:custom-gpu-ubuntu", REGION, catalog) == moto_images[2]
    assert images.catalog_image("skypilot:custom-cpu-ubuntu", "eu-west-1", catalog) is None


def test_a_gpu_node_boots_the_gpu_image_and_image_id_overrides(cloud, aws, moto_images):
    gpu = cloud.provision(request("gpu", GPU))
    assert gpu.extra["image_id"] == moto_images[2] and gpu.accelerator == "A10G"
    assert gpu.extra["zone_name"] == ZONE_NAMES["use1-az2"]
    [instance] = of_attempt(aws, gpu.uid)
    assert instance["ImageId"] == moto_images[2]
    chosen = cloud.provision(request("ami", image_id=moto_images[4]))
    assert of_attempt(aws, chosen.uid)[0]["ImageId"] == moto_images[4]
    tagged = cloud.provision(request("tagged", image_id="skypilot:neuron-ubuntu-2204"))
    assert of_attempt(aws, tagged.uid)[0]["ImageId"] == moto_images[3]


def test_an_unknown_ami_is_a_clear_error_and_nothing_is_made(cloud, aws, sent):
    req = request("noami", image_id="ami-0123456789abcdef0")
    with pytest.raises(ProvisionError) as failure:
        cloud.provision(req)
    assert (failure.value.kind, failure.value.scope) == ("other", "region")
    assert failure.value.reason.startswith("AMI ami-0123456789abcdef0 does not exist in us-east-1")
    assert sent == [] and groups_of_attempt(aws, req.uid) == [] and of_attempt(aws, req.uid) == []


def test_a_region_the_catalog_has_no_image_for_says_so(cloud, aws):
    with pytest.raises(ProvisionError, match="has no skypilot:custom-cpu-ubuntu image for us-west-2"):
        cloud.provision(request("noimage", CPU._replace(region="us-west-2", zone="usw2-az1")))


def test_stop_then_start_gives_a_handle_with_new_addresses(cloud, aws):
    handle = cloud.provision(request("cycle", num_nodes=2))
    cloud.stop(handle)
    assert cloud.query(handle) == ["stopped", "stopped"]
    started = cloud.start(handle)
    assert cloud.query(started) == ["running", "running"]
    assert [n.node_id for n in started.nodes] == [n.node_id for n in handle.nodes]
    fresh = {i["InstanceId"]: i["PublicIpAddress"] for i in of_attempt(aws, handle.uid)}
    assert [n.external_ip for n in started.nodes] == [fresh[n.node_id] for n in handle.nodes]
    assert [n.runner["host"] for n in started.nodes] == [fresh[n.node_id] for n in handle.nodes]
    assert started.extra["security_group_id"] == handle.extra["security_group_id"]


def test_terminate_removes_instances_and_the_group_and_can_repeat(aws):
    cloud = AWSCloud()
    handle = cloud.provision(request("gone", num_nodes=2))
    cloud.terminate(handle)
    assert of_attempt(aws, handle.uid) == [] and groups_of_attempt(aws, handle.uid) == []
    assert cloud.query(handle) == ["terminated", "terminated"]
    cloud.terminate(handle)  # already gone: fine
    assert cloud.find_attempt(ProvisionAttempt("gone", handle.uid, "aws", REGION)) == []


def test_terminate_finds_instances_a_handle_lacks_by_tag(aws):
    cloud = AWSCloud()
    handle = cloud.provision(request("partial", num_nodes=3))
    short = dataclasses.replace(handle, nodes=handle.nodes[:1],
                                extra={**handle.extra, "instance_ids": handle.extra["instance_ids"][:1],
                                       "security_group_id": None})
    cloud.terminate(short)
    assert of_attempt(aws, handle.uid) == [] and groups_of_attempt(aws, handle.uid) == []


def test_query_reports_missing_and_preempted_nodes(aws, bed):
    cloud = AWSCloud()
    handle = cloud.provision(request("states", use_spot=True, num_nodes=2))
    try:
        bed.preempt(handle.nodes[1].node_id)  # AWS takes the worker back
        assert cloud.query(handle) == ["running", "preempted"]
        aws.terminate_instances(InstanceIds=[handle.nodes[0].node_id])
        assert cloud.query(handle) == ["terminated", "preempted"]
    finally:
        cloud.terminate(handle)
    unknown = dataclasses.replace(handle, uid="ffffffff",
                                  nodes=(dataclasses.replace(handle.nodes[0], node_id="i-0123456789abcdef0"),))
    assert cloud.query(unknown) == ["missing"]


def test_a_launch_killed_after_run_instances_is_found_and_removed_by_its_attempt(aws):
    # Only the steps up to RunInstances ran: no handle, no rank tags.
    req = request("killed", num_nodes=2)
    ec2 = session.ec2(REGION)
    image = images.resolve(ec2, req)
    from skyk_aws import vpcs

    network = vpcs.find_network(ec2, REGION, ZONE_NAMES["use1-az1"])
    group = security_groups.create(ec2, network.vpc_id, req.cluster, req.uid, ())
    params = instances.launch_parameters(req, image, network, "#cloud-config\n")
    made = instances.run(ec2, req.uid, {**params, "SecurityGroupIds": [group]})
    attempt = ProvisionAttempt.of(req)
    cloud = AWSCloud()
    found = cloud.find_attempt(attempt)
    assert sorted(found) == sorted([f"instance {i['InstanceId']} (running)" for i in made]
                                   + [f"security group {group}"])
    cloud.remove_attempt(attempt)
    assert cloud.find_attempt(attempt) == []
    assert of_attempt(aws, req.uid) == [] and groups_of_attempt(aws, req.uid) == []
    cloud.remove_attempt(attempt)  # nothing left: fine


def test_a_failure_after_run_instances_removes_what_was_made(cloud, aws, monkeypatch):
    def fail(*_, **__):
        raise ClientError({"Error": {"Code": "InternalError", "Message": "An internal error has occurred"}},
                          "CreateTags")

    monkeypatch.setattr(instances, "tag_ranks", fail)
    req = request("broken", num_nodes=2)
    with pytest.raises(ProvisionError) as failure:
        cloud.provision(req)
    assert (failure.value.kind, failure.value.scope) == ("outage", "region")
    assert "InternalError: An internal error has occurred" in failure.value.reason
    assert of_attempt(aws, req.uid) == [] and groups_of_attempt(aws, req.uid) == []


def test_a_region_without_a_default_vpc_is_one_clear_line_and_leaves_nothing(aws, bed):
    region, zone_id = OTHER_REGION, "euw3-az1"
    bed.remove_default_vpc(region)
    client = session.ec2(region)
    req = request("novpc", CPU._replace(region=region, zone=zone_id))
    with pytest.raises(ProvisionError) as failure:
        AWSCloud().provision(req)
    assert (failure.value.kind, failure.value.scope) == ("other", "region")
    assert failure.value.reason == ("eu-west-3 has no default VPC; create one with 'aws ec2 create-default-vpc"
                                    f" --region eu-west-3', or name a VPC in {VPC_ENV}")
    assert client.describe_security_groups(Filters=[tags.attempt_filter(req.uid)])["SecurityGroups"] == []


def test_a_vpc_named_by_the_user_holds_the_nodes(cloud, aws, monkeypatch):
    vpc = aws.create_vpc(CidrBlock="10.77.0.0/16", TagSpecifications=[
        {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "skyk-test-vpc"}]}])["Vpc"]["VpcId"]
    subnet = aws.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24",
                               AvailabilityZone=ZONE_NAMES["use1-az1"])["Subnet"]["SubnetId"]
    monkeypatch.setenv(VPC_ENV, "skyk-test-vpc")
    handle = cloud.provision(request("myvpc"))
    assert (handle.extra["vpc_id"], handle.extra["subnet_id"]) == (vpc, subnet)
    [instance] = of_attempt(aws, handle.uid)
    assert instance["SubnetId"] == subnet and instance["PrivateIpAddress"].startswith("10.77.1.")
    monkeypatch.setenv(VPC_ENV, vpc)
    with pytest.raises(ProvisionError, match=f"VPC {vpc} has no subnet in zone us-east-1c"):
        cloud.provision(request("myvpc2", GPU))
    monkeypatch.setenv(VPC_ENV, "no-such-vpc")
    with pytest.raises(ProvisionError, match="no VPC 'no-such-vpc'"):
        cloud.provision(request("myvpc3"))


def test_an_unreachable_endpoint_is_an_outage_of_the_region(aws, monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", f"http://127.0.0.1:{closed}")
    with pytest.raises(ProvisionError) as failure:
        AWSCloud().provision(request("offline"))
    assert (failure.value.kind, failure.value.scope) == ("outage", "region")
    assert "EC2 in us-east-1 unreachable" in failure.value.reason
    with pytest.raises(SkykError, match="AWS could not look up cluster"):
        AWSCloud().query(dataclasses.replace(_fake_handle(), region=REGION))


def _fake_handle():
    from skyk.provision.types import ClusterHandle, NodeInfo

    node = NodeInfo("i-0123456789abcdef0", "10.0.0.1", None, {"kind": "ssh"})
    return ClusterHandle("x", "eeeeeeee", "aws", REGION, None, "m6i.large", False, 0.1, None, 0.0, (node,))
