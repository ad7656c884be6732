"""One security group per launch attempt: SSH and the task's ports, open to the world.

Named ``skyk-<cluster>-<uid>`` and tagged as the attempt's from creation, so a
killed launch's group is found by its tags. A group cannot be deleted while an
instance (or its network interface, which outlives the instance briefly) uses
it (``DependencyViolation``): the caller terminates the instances first and
tries again while it is.
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from skyk.provision.ports import port_ranges

from skyk_aws import errors, tags

ANYWHERE = "0.0.0.0/0"


def group_name(cluster: str, uid: str) -> str:
    """The group's name (cluster names are at most 63 safe characters, well within EC2's 255)."""
    return f"skyk-{cluster}-{uid}"


def create(ec2, vpc_id: str, cluster: str, uid: str, ports: tuple[int, ...]) -> str:
    """Make (or, on a repeat, find) the attempt's group in ``vpc_id``, open on SSH and ``ports``."""
    name = group_name(cluster, uid)
    try:
        group_id = errors.call(ec2.create_security_group, GroupName=name, VpcId=vpc_id,
                               Description=f"skyk cluster {cluster}, launch attempt {uid}",
                               TagSpecifications=[tags.specification("security-group", cluster, uid)]
                               )["GroupId"]
    except ClientError as exc:
        if errors.error_code(exc) != "InvalidGroup.Duplicate":
            raise
        # A lost answer: the first try made it.
        found = errors.call(ec2.describe_security_groups,
                            Filters=[{"Name": "group-name", "Values": [name]},
                                     {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
        group_id = found[0]["GroupId"]
    rules = [{"IpProtocol": "tcp", "FromPort": first, "ToPort": last,
              "IpRanges": [{"CidrIp": ANYWHERE, "Description": f"skyk {cluster}"}]}
             for first, last in port_ranges(ports)]
    try:
        errors.call(ec2.authorize_security_group_ingress, GroupId=group_id, IpPermissions=rules)
    except ClientError as exc:
        if errors.error_code(exc) != "InvalidPermission.Duplicate":
            raise
    return group_id


def find(ec2, uid: str) -> list[str]:
    """The IDs of the groups attempt ``uid`` made in this region."""
    answer = errors.call(ec2.describe_security_groups, Filters=[tags.attempt_filter(uid)])
    return sorted(g["GroupId"] for g in answer.get("SecurityGroups", []))


def delete(ec2, group_ids: list[str]) -> list[str]:
    """Delete the groups (one already gone is fine); return those still in use by an instance."""
    in_use = []
    for group_id in group_ids:
        try:
            errors.call(ec2.delete_security_group, GroupId=group_id)
        except ClientError as exc:
            code = errors.error_code(exc)
            if code == "DependencyViolation":
                in_use.append(group_id)
            elif code != "InvalidGroup.NotFound":
                raise
    return in_use
