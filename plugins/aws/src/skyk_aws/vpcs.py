"""Where in the network nodes go: a VPC, and a subnet of it in the chosen zone.

By default the region's default VPC and its default subnet in the zone (public
addresses on launch). ``SKYK_AWS_VPC`` names another VPC, by ID (``vpc-...``)
or by its ``Name`` tag; nodes then go to one of its subnets in the zone,
preferring one that gives public addresses, then the one with most free
addresses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from skyk.provision.types import ProvisionError

from skyk_aws import errors

VPC_ENV = "SKYK_AWS_VPC"


@dataclass(frozen=True)
class Network:
    """The VPC and subnet nodes are placed in."""

    vpc_id: str
    subnet_id: str
    #: whether the subnet gives instances public addresses (else nodes are reached privately)
    public_ips: bool


def find_vpc(ec2, region: str) -> tuple[str, bool]:
    """Return (VPC ID, whether it is the default VPC) for ``region``, or raise a region-scoped error."""
    named = os.environ.get(VPC_ENV, "").strip()
    if not named:
        found = errors.call(ec2.describe_vpcs, Filters=[{"Name": "is-default", "Values": ["true"]}])
        if not found.get("Vpcs"):
            raise ProvisionError("other", "region", f"{region} has no default VPC; create one with 'aws ec2"
                                 f" create-default-vpc --region {region}', or name a VPC in {VPC_ENV}")
        return found["Vpcs"][0]["VpcId"], True
    key = "vpc-id" if named.startswith("vpc-") else "tag:Name"
    vpcs = errors.call(ec2.describe_vpcs, Filters=[{"Name": key, "Values": [named]}]).get("Vpcs", [])
    if not vpcs:
        raise ProvisionError("other", "region", f"no VPC {named!r} ({VPC_ENV}) in {region}")
    if len(vpcs) > 1:
        raise ProvisionError("other", "region", f"{len(vpcs)} VPCs are named {named!r} in {region};"
                             f" set {VPC_ENV} to one's ID")
    return vpcs[0]["VpcId"], bool(vpcs[0].get("IsDefault"))


def find_network(ec2, region: str, zone_name: str | None) -> Network:
    """Return the VPC and subnet for nodes in ``zone_name`` (any zone when None)."""
    vpc_id, default = find_vpc(ec2, region)
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "state", "Values": ["available"]}]
    if zone_name:
        filters.append({"Name": "availability-zone", "Values": [zone_name]})
    if default:
        filters.append({"Name": "default-for-az", "Values": ["true"]})
    subnets = errors.call(ec2.describe_subnets, Filters=filters).get("Subnets", [])
    if not subnets:
        where = f"zone {zone_name}" if zone_name else region
        raise ProvisionError("unsupported", "zone", f"VPC {vpc_id} has no {'default ' if default else ''}"
                             f"subnet in {where}")
    best = max(subnets, key=lambda s: (bool(s.get("MapPublicIpOnLaunch")),
                                       s.get("AvailableIpAddressCount", 0), s["SubnetId"]))
    return Network(vpc_id, best["SubnetId"], bool(best.get("MapPublicIpOnLaunch")))
