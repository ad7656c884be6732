"""EC2 instances: launching a cluster's nodes in one call, finding them, waiting on them.

All nodes of an attempt come from one ``RunInstances`` call (MinCount =
MaxCount: all or nothing), tagged as the attempt's from the start, with a
``ClientToken`` derived from the attempt so a repeated call never makes a
second set. Their ranks are their launch indexes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from skyk.errors import printable
from skyk.provision.cloud import NodeState
from skyk.provision.types import ProvisionError, ProvisionRequest

from skyk_aws import errors, tags
from skyk_aws.images import Image
from skyk_aws.vpcs import Network

#: States of an instance that still exists (and may cost money).
LIVE = ("pending", "running", "stopping", "stopped", "shutting-down")
#: The state reason of a spot instance AWS took back.
SPOT_TERMINATION = "Server.SpotInstanceTermination"
#: GiB of the root volume when the task names no disk_size (SkyPilot's default).
DEFAULT_DISK_GIB = 256
DEFAULT_DISK_TIER = "medium"
#: gp3 IOPS and throughput (MiB/s) per disk tier; gp3's free baseline is 3000 and 125.
DISK_TIERS = {"low": (3000, 125), "medium": (3500, 250), "high": (6000, 400),
              "ultra": (16000, 1000), "best": (16000, 1000)}
#: first and longest pause between two looks at instances that are changing state
FIRST_POLL = 0.2
MAX_POLL = 5.0
#: tries of tagging an instance EC2 does not know yet
_TAG_TRIES = 5


def client_token(cluster: str, uid: str) -> str:
    """The attempt's ``ClientToken`` (EC2 allows 64 ASCII characters)."""
    return "skyk-" + hashlib.sha256(f"{cluster}/{uid}".encode()).hexdigest()[:40]


def root_volume(image: Image, disk_size: int | None, disk_tier: str | None) -> dict:
    """The root volume's block device mapping: gp3 of ``disk_size`` GiB, fast as the tier asks."""
    size = disk_size or max(DEFAULT_DISK_GIB, image.root_size or 0)
    if image.root_size and size < image.root_size:
        raise ProvisionError("other", "region", f"disk_size {size} GiB is smaller than AMI"
                             f" {image.image_id}'s {image.root_size} GiB root snapshot")
    iops, throughput = DISK_TIERS[disk_tier or DEFAULT_DISK_TIER]
    # gp3 allows at most 500 IOPS per GiB (never less than its 3000 baseline)
    # and 0.25 MiB/s of throughput per IOPS.
    iops = max(3000, min(iops, 500 * size))
    throughput = min(throughput, iops // 4)
    return {"DeviceName": image.root_device,
            "Ebs": {"VolumeSize": size, "VolumeType": "gp3", "Iops": iops, "Throughput": throughput,
                    "DeleteOnTermination": True}}


def launch_parameters(request: ProvisionRequest, image: Image, network: Network, user_data: str) -> dict:
    """The ``RunInstances`` parameters for all of ``request``'s nodes, but their security group."""
    params = {
        "ImageId": image.image_id,
        "InstanceType": request.offering.instance_type,
        "MinCount": request.num_nodes,
        "MaxCount": request.num_nodes,
        "ClientToken": client_token(request.cluster, request.uid),
        "UserData": user_data,
        "SubnetId": network.subnet_id,
        "BlockDeviceMappings": [root_volume(image, request.disk_size, request.disk_tier)],
        # A node powering itself off (autostop) stops; spot instances cannot stop.
        "InstanceInitiatedShutdownBehavior": "terminate" if request.use_spot else "stop",
        "TagSpecifications": [tags.specification(kind, request.cluster, request.uid)
                              for kind in ("instance", "volume")],
    }
    if request.use_spot:
        params["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    return params


def run(ec2, uid: str, params: dict) -> list[dict]:
    """Send ``RunInstances`` for attempt ``uid``; return the instances it made, by launch index.

    A retry (after throttling, or an answer lost on the way) carries the same
    ``ClientToken``, so EC2 returns the first set rather than making another.
    Before retrying, the attempt's tag is looked up too: a whole set found
    there is the first try's.
    """

    def made_already() -> dict | None:
        found = live(find(ec2, uid))
        return {"Instances": found} if len(found) == params["MinCount"] else None

    answer = errors.call(ec2.run_instances, settled=made_already, **params)
    return sorted(answer["Instances"], key=lambda i: i.get("AmiLaunchIndex", 0))


def describe(ec2, filters: list[dict]) -> list[dict]:
    """Every instance matching ``filters``, over all pages."""
    found, token = [], None
    while True:
        page = errors.call(ec2.describe_instances, Filters=filters, **({"NextToken": token} if token else {}))
        found += [i for r in page.get("Reservations", []) for i in r.get("Instances", [])]
        token = page.get("NextToken")
        if not token:
            return found


def find(ec2, uid: str, ids: Iterable[str] = ()) -> list[dict]:
    """The instances attempt ``uid`` made, plus any of ``ids`` (terminated ones included).

    Filters, not ``InstanceIds``: an ID EC2 no longer knows is then simply absent.
    """
    found = {i["InstanceId"]: i for i in describe(ec2, [tags.attempt_filter(uid)])}
    ids = [i for i in dict.fromkeys(ids) if i not in found]
    if ids:
        found.update((i["InstanceId"], i) for i in describe(ec2, [{"Name": "instance-id", "Values": ids}]))
    return list(found.values())


def live(instances: list[dict]) -> list[dict]:
    """Those of ``instances`` that still exist."""
    return [i for i in instances if state(i) in LIVE]


def state(instance: dict) -> str:
    """EC2's state name of a described instance."""
    return instance.get("State", {}).get("Name", "")


def rank(instance: dict) -> int | None:
    """The node rank skyk tagged ``instance`` with, or None."""
    value = tags.value(instance, tags.RANK)
    return int(value) if value is not None and value.isdigit() else None


def node_state(instance: dict | None) -> NodeState:
    """What a node is doing, from its instance's description (None: EC2 no longer knows it)."""
    if instance is None:
        return "missing"
    name = state(instance)
    if name in ("pending", "running"):
        return "running"
    if name in ("stopping", "stopped"):
        return "stopped"
    if instance.get("StateReason", {}).get("Code") == SPOT_TERMINATION:
        return "preempted"
    return "terminated"


def tag_ranks(ec2, instances: list[dict]) -> None:
    """Tag each instance with its node rank: its launch index.

    EC2 is eventually consistent: an instance it has just listed may still be
    unknown to ``CreateTags`` for a moment, which is waited out briefly.
    """
    from concurrent.futures import ThreadPoolExecutor

    from botocore.exceptions import ClientError

    def tag(instance: dict) -> None:
        pause = FIRST_POLL
        for attempt in range(_TAG_TRIES):
            try:
                errors.call(ec2.create_tags, Resources=[instance["InstanceId"]],
                            Tags=[{"Key": tags.RANK, "Value": str(instance.get("AmiLaunchIndex", 0))}])
                return
            except ClientError as exc:
                if errors.error_code(exc) != "InvalidInstanceID.NotFound" or attempt + 1 == _TAG_TRIES:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, MAX_POLL)

    # One call per rank (each has its own value), all at once: a big cluster pays one round trip.
    with ThreadPoolExecutor(max_workers=min(16, len(instances) or 1)) as pool:
        for done in [pool.submit(tag, i) for i in instances]:
            done.result()


def _failure(instance: dict, zone: str | None) -> ProvisionError:
    """Why an instance ended (or stopped) instead of running, for failover."""
    reason = instance.get("StateReason", {})
    code, message = reason.get("Code") or state(instance), reason.get("Message") or ""
    text = printable(f"instance {instance['InstanceId']} is {state(instance)}: {message or code}",
                            errors.REASON_LIMIT)
    if code in ("Server.InsufficientInstanceCapacity", SPOT_TERMINATION, "Server.SpotInstanceShutdown"):
        return ProvisionError("capacity", "zone", text)
    if code == "Client.VolumeLimitExceeded":
        return ProvisionError("quota", "region", text)
    return ProvisionError("other", "zone" if zone else "region", text)


def wait_running(ec2, ids: list[str], public_ips: bool, timeout: float,
                 zone: str | None = None) -> list[dict]:
    """Poll until every instance of ``ids`` runs with its addresses; return them in ``ids``' order.

    Raises when one is terminated on the way (or stopped by AWS), and a
    ``timeout`` error after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pause = FIRST_POLL
    while True:
        # Just after RunInstances an instance may not be listed yet: that is waited out too.
        found = {i["InstanceId"]: i for i in describe(ec2, [{"Name": "instance-id", "Values": ids}])}
        for instance in found.values():
            name = state(instance)
            server_stop = (name in ("stopping", "stopped")
                           and instance.get("StateReason", {}).get("Code", "").startswith("Server."))
            if name in ("shutting-down", "terminated") or server_stop:
                raise _failure(instance, zone)
        waiting = [i for i in ids if not _ready(found.get(i), public_ips)]
        if not waiting:
            return [found[i] for i in ids]
        if time.monotonic() + pause > deadline:
            raise ProvisionError("timeout", "zone" if zone else "region",
                                 f"instance(s) {', '.join(waiting)} not running with an address after"
                                 f" {timeout:g}s")
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_POLL)


def _ready(instance: dict | None, public_ips: bool) -> bool:
    return (instance is not None and state(instance) == "running"
            and bool(instance.get("PrivateIpAddress"))
            and (bool(instance.get("PublicIpAddress")) or not public_ips))


def wait_states(ec2, ids: list[str], wanted: tuple[str, ...], deadline: float) -> bool:
    """Poll until every instance of ``ids`` is in one of ``wanted`` (or unknown to EC2).

    Returns False if some are not by ``deadline`` (a ``time.monotonic()`` value).
    """
    pause = FIRST_POLL
    while True:
        found = describe(ec2, [{"Name": "instance-id", "Values": ids}])
        if all(state(i) in wanted for i in found):
            return True
        if time.monotonic() + pause > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_POLL)
