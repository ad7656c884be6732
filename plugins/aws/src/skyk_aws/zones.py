"""Zone IDs (the catalog's ``use1-az1``) to this account's zone names (``us-east-1b``).

A zone ID names the same data centre in every account; a zone name is
shuffled per account, and EC2's requests take names. The mapping comes from
``DescribeAvailabilityZones``, once per account and region in a process.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from skyk.provision.types import ProvisionError

from skyk_aws import errors, session


class Zone(NamedTuple):
    """One zone as this account sees it."""

    name: str
    state: str


_lock = threading.Lock()
_zones: dict[tuple, dict[str, Zone]] = {}


def zones(ec2, region: str) -> dict[str, Zone]:
    """Return this account's zones of ``region`` by zone ID (cached)."""
    key = (session.account_key(), region)
    with _lock:
        found = _zones.get(key)
    if found is None:
        answer = errors.call(ec2.describe_availability_zones)
        found = {z["ZoneId"]: Zone(z["ZoneName"], z.get("State", "available"))
                 for z in answer.get("AvailabilityZones", []) if z.get("ZoneId")}
        with _lock:
            _zones[key] = found
    return found


def zone_name(ec2, region: str, zone_id: str) -> str:
    """Return the name of zone ``zone_id`` in this account, or raise a zone-scoped error."""
    zone = zones(ec2, region).get(zone_id)
    if zone is None:
        # Local and Wavelength zones need opting in; a new zone may not have reached the account.
        raise ProvisionError("unsupported", "zone", f"zone {zone_id} is not available to this AWS"
                             f" account in {region} (not enabled, or not offered to it)")
    if zone.state != "available":
        raise ProvisionError("outage", "zone", f"zone {zone_id} ({zone.name}) is {zone.state}")
    return zone.name
