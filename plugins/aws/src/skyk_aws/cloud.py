"""The AWS cloud: EC2 instances reached over SSH, credentials found the way the AWS CLI finds them.

This module is imported with the plugin, so it must not import boto3: the
modules that talk to EC2 (:mod:`skyk_aws.session` and the rest) are imported
inside the methods that provision, which only ``launch``, ``stop``,
``start``, ``down`` and ``status -r`` call.

What a launch attempt makes in the account (instances, their volumes, one
security group) is tagged with the attempt from the moment it exists, and is
found by that tag whenever a handle cannot be trusted to list it all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

from skyk.errors import SkykError
from skyk.provision.cloud import CredentialCheck, NodeState
from skyk.provision.ssh_cloud import SSHCloud
from skyk.provision.types import ClusterHandle, ProvisionAttempt, ProvisionError, ProvisionRequest

NAME = "aws"

# botocore's credential providers that read only the environment and local
# files; the others (instance metadata, containers, SSO, assume-role) call
# the network, which `skyk check` must not.
_LOCAL_PROVIDERS = ("env", "shared-credentials-file", "config-file")
# Profile settings that yield credentials at launch time through the network.
_DEFERRED_SETTINGS = ("role_arn", "sso_session", "sso_start_url", "credential_process")

#: seconds new (or restarted) instances have to be running with their addresses
RUNNING_TIMEOUT = 300.0
#: seconds instances have to reach ``terminated`` before their security group is deleted,
#: and then the group's own grace (its network interfaces go a little after)
TERMINATE_TIMEOUT = 300.0
GROUP_GRACE = 60.0
#: first and longest pause between two tries of deleting a security group still in use
_FIRST_PAUSE = 0.5
_MAX_PAUSE = 5.0


class AWSCloud(SSHCloud):
    """Amazon EC2."""

    name = NAME
    display_name = "AWS"
    ssh_user = "ubuntu"

    def check_credentials(self) -> CredentialCheck:
        import botocore.session
        from botocore.exceptions import BotoCoreError

        try:
            session = botocore.session.Session()
            resolver = session.get_component("credential_provider")
            resolver.providers = [p for p in resolver.providers if p.METHOD in _LOCAL_PROVIDERS]
            credentials = resolver.load_credentials()
            profile = session.get_scoped_config()
        except BotoCoreError as exc:
            return CredentialCheck(False, f"AWS configuration is broken: {exc}",
                                   hint="fix ~/.aws/config or unset AWS_PROFILE")
        if credentials is not None:
            return CredentialCheck(True, f"credentials from {credentials.method}")
        deferred = [s for s in _DEFERRED_SETTINGS if s in profile]
        if deferred:
            return CredentialCheck(True, f"profile uses {deferred[0]}; checked at launch")
        return CredentialCheck(False, "no AWS credentials found",
                               hint="run 'aws configure' or set AWS_ACCESS_KEY_ID and"
                               " AWS_SECRET_ACCESS_KEY")

    # -- provisioning ---------------------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> ClusterHandle:
        from botocore.exceptions import BotoCoreError, ClientError
        from skyk.provision.cleanup import removed_on_failure
        from skyk.provision.ssh_cloud import cloud_config
        from skyk.provision.ssh_keys import user_key

        from skyk_aws import errors, images, instances, security_groups, session, vpcs, zones

        offering = request.offering
        region = offering.region
        key = user_key()
        # Everything that can be checked is, before anything is created.
        try:
            ec2 = session.ec2(region)
            zone_name = zones.zone_name(ec2, region, offering.zone) if offering.zone else None
            image = images.resolve(ec2, request)
            network = vpcs.find_network(ec2, region, zone_name)
            params = instances.launch_parameters(request, image, network,
                                                 cloud_config(self.ssh_user, key))
        except (ClientError, BotoCoreError) as exc:
            raise errors.classify(exc, region, offering.zone) from exc
        # From here on something may exist: any failure removes all the attempt made.
        def classify(exc: BaseException) -> BaseException:
            if isinstance(exc, (ClientError, BotoCoreError)):
                return errors.classify(exc, region, offering.zone)
            return exc

        with removed_on_failure(request.uid, lambda: _remove(ec2, request.uid), classify, errors.reason):
            group_id = security_groups.create(ec2, network.vpc_id, request.cluster, request.uid,
                                              request.ports)
            params["SecurityGroupIds"] = [group_id]
            launched = instances.run(ec2, request.uid, params)
            ids = [i["InstanceId"] for i in launched]
            running = instances.wait_running(ec2, ids, network.public_ips, RUNNING_TIMEOUT, offering.zone)
            # Once EC2 lists them: tagging an instance it does not list yet fails.
            instances.tag_ranks(ec2, running)
        nodes = tuple(self._node(i, key, rank) for rank, i in enumerate(running))
        extra = {"instance_ids": ids, "security_group_id": group_id, "zone_name": zone_name,
                 "vpc_id": network.vpc_id, "subnet_id": network.subnet_id,
                 "public_ips": network.public_ips, "image_id": image.image_id}
        return ClusterHandle.of(request, nodes, extra)

    def query(self, handle: ClusterHandle) -> list[NodeState]:
        from skyk_aws import instances

        with _user_errors(f"look up cluster {handle.cluster}'s instances", handle.region):
            return [instances.node_state(i) for i in _instances_of(handle)]

    def stop(self, handle: ClusterHandle) -> None:
        from skyk_aws import errors, instances

        if handle.use_spot:
            raise SkykError(f"cluster {handle.cluster} runs on spot instances, which AWS cannot stop",
                            hint=f"'skyk down {handle.cluster}' removes it")
        with _user_errors(f"stop cluster {handle.cluster}", handle.region):
            present = instances.live([i for i in _instances_of(handle) if i is not None])
            if not present:
                raise SkykError(f"cluster {handle.cluster} has no instances left in AWS",
                                hint=f"'skyk down {handle.cluster}' forgets it")
            running = [i["InstanceId"] for i in present if instances.state(i) in ("pending", "running")]
            if running:
                errors.call(_ec2(handle.region).stop_instances, InstanceIds=running)

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        from skyk.provision.ssh_keys import user_key

        from skyk_aws import errors, instances

        with _user_errors(f"start cluster {handle.cluster}", handle.region):
            ec2 = _ec2(handle.region)
            found = _instances_of(handle)
            for node, instance in zip(handle.nodes, found, strict=True):
                if instance is None or instances.state(instance) in ("shutting-down", "terminated"):
                    raise SkykError(f"node {node.node_id} of cluster {handle.cluster} is"
                                    f" {instances.node_state(instance)}, so the cluster cannot start",
                                    hint=f"'skyk down {handle.cluster}', then launch it again")
            ids = [i["InstanceId"] for i in found]
            stopping = [i["InstanceId"] for i in found if instances.state(i) == "stopping"]
            deadline = time.monotonic() + RUNNING_TIMEOUT
            if stopping and not instances.wait_states(ec2, stopping, ("stopped",), deadline):
                raise ProvisionError("timeout", "region", f"instance(s) {', '.join(stopping)} still"
                                     f" stopping after {RUNNING_TIMEOUT:g}s")
            stopped = [i["InstanceId"] for i in found if instances.state(i) in ("stopping", "stopped")]
            if stopped:
                errors.call(ec2.start_instances, InstanceIds=stopped)
            running = instances.wait_running(ec2, ids, handle.extra.get("public_ips", True),
                                             max(1.0, deadline - time.monotonic()))
        # Public addresses change on every start: the nodes are described afresh.
        key = user_key()
        return dataclasses.replace(handle, nodes=tuple(self._node(i, key, rank) for rank, i in enumerate(running)),
                                   extra={**handle.extra, "instance_ids": ids})

    def terminate(self, handle: ClusterHandle) -> None:
        with _user_errors(f"remove cluster {handle.cluster}", handle.region):
            ids = [*handle.extra.get("instance_ids", ()), *(n.node_id for n in handle.nodes)]
            group = handle.extra.get("security_group_id")
            _remove(_ec2(handle.region), handle.uid, ids, [group] if group else [])

    def find_attempt(self, attempt: ProvisionAttempt) -> list[str]:
        from skyk_aws import instances, security_groups

        with _user_errors(f"look up what launch attempt {attempt.uid} made", attempt.region):
            ec2 = _ec2(attempt.region)
            found = [f"instance {i['InstanceId']} ({instances.state(i)})"
                     for i in instances.live(instances.find(ec2, attempt.uid))]
            return found + [f"security group {g}" for g in security_groups.find(ec2, attempt.uid)]

    def remove_attempt(self, attempt: ProvisionAttempt) -> None:
        with _user_errors(f"remove what launch attempt {attempt.uid} made", attempt.region):
            _remove(_ec2(attempt.region), attempt.uid)

    def prepare_autostop(self, handle: ClusterHandle, down: bool) -> None:
        from skyk_aws import errors, instances

        # What a node's own poweroff does; spot instances can only terminate.
        behaviour = "terminate" if down or handle.use_spot else "stop"
        with _user_errors(f"set cluster {handle.cluster}'s shutdown behaviour", handle.region):
            ec2 = _ec2(handle.region)
            for instance in instances.live([i for i in _instances_of(handle) if i is not None]):
                # The documented Attribute/Value form, which every EC2 implementation knows.
                errors.call(ec2.modify_instance_attribute, InstanceId=instance["InstanceId"],
                            Attribute="instanceInitiatedShutdownBehavior", Value=behaviour)

    def _node(self, instance: dict, key, rank: int):
        from skyk.provision.ssh_cloud import ssh_node

        return ssh_node(instance["InstanceId"], instance["PrivateIpAddress"],
                        instance.get("PublicIpAddress"), self.ssh_user, key, head=rank == 0)


def _ec2(region: str):
    from skyk_aws import session

    return session.ec2(region)


def _instances_of(handle: ClusterHandle) -> list[dict | None]:
    """Each node's instance, head first (None where EC2 no longer knows it).

    A node is found by its instance ID, or else by the rank tag among the
    attempt's instances, so a handle short of IDs still finds them.
    """
    from skyk_aws import instances

    ids = [n.node_id for n in handle.nodes]
    found = instances.find(_ec2(handle.region), handle.uid, ids)
    by_id = {i["InstanceId"]: i for i in found}
    by_rank: dict[int, dict] = {}
    # Live instances win a rank over terminated ones (of an earlier, failed try).
    for instance in sorted(found, key=lambda i: instances.state(i) in instances.LIVE):
        if (rank := instances.rank(instance)) is not None:
            by_rank[rank] = instance
    return [by_id.get(node_id) or by_rank.get(rank) for rank, node_id in enumerate(ids)]


def _remove(ec2, uid: str, ids: list[str] | tuple[str, ...] = (), group_ids: list[str] | None = None) -> None:
    """Terminate attempt ``uid``'s instances (and ``ids``), then delete its security groups.

    A group can go only once no instance uses it, so this waits for the
    instances to terminate (when there is a group to delete), and while a
    group is still in use looks again for instances: one EC2 did not list
    yet holds it. Succeeds if nothing is left; raises a ``timeout`` error if
    something still is after :data:`TERMINATE_TIMEOUT` and :data:`GROUP_GRACE`.
    """
    from skyk_aws import errors, instances, security_groups

    deadline = time.monotonic() + TERMINATE_TIMEOUT + GROUP_GRACE
    groups = sorted({*(group_ids or ()), *security_groups.find(ec2, uid)})
    pause = _FIRST_PAUSE
    while True:
        present = instances.live(instances.find(ec2, uid, ids))
        doomed = [i["InstanceId"] for i in present if instances.state(i) != "shutting-down"]
        if doomed:
            errors.call(ec2.terminate_instances, InstanceIds=doomed)
        if not groups:
            return
        going = [i["InstanceId"] for i in present]
        if going and not instances.wait_states(ec2, going, ("terminated",), deadline - GROUP_GRACE):
            raise ProvisionError("timeout", "region", f"instance(s) {', '.join(going)} not terminated"
                                 f" after {TERMINATE_TIMEOUT:g}s, so security group(s) {', '.join(groups)}"
                                 " remain")
        groups = security_groups.delete(ec2, groups)
        if not groups:
            return
        if time.monotonic() + pause > deadline:
            raise ProvisionError("timeout", "region", f"security group(s) {', '.join(groups)} still in use")
        time.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE)


@contextlib.contextmanager
def _user_errors(action: str, region: str) -> Iterator[None]:
    """Turn AWS's errors in a CLI verb into one-line ``SkykError`` s saying what could not be done."""
    from botocore.exceptions import BotoCoreError, ClientError

    from skyk_aws import errors

    try:
        yield
    except (ClientError, BotoCoreError, ProvisionError) as exc:
        raise errors.user_error(exc, action, region) from exc
