"""The flaky cloud's hooks.

``FLAKY_FAIL`` lists failures as ``ZONE=KIND[:SCOPE]``, comma-separated, e.g.
``flaky-east-1a=capacity,flaky-east-1b=quota:region``; ``*`` matches every
zone. ``FLAKY_HANG`` names zones where provisioning never answers.
``FLAKY_WAIT_HANG`` makes nodes that never become ready.
``FLAKY_ATTEMPTS`` names a file that gets one line per attempted zone.
``FLAKY_REQUESTS`` names a file that gets each request's disk and image fields as a JSON line.
``FLAKY_AUTOSTOP`` names a file that gets a line per ``prepare_autostop`` call (``down`` or ``stop``).
``FLAKY_SPOT_OUTAGE`` names a file: while it exists, no zone has spot capacity.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from skyk.builtin.local_cloud import LocalCloud
from skyk.catalog.csvfile import read_offerings
from skyk.hookspecs import hookimpl
from skyk.provision.types import ClusterHandle, ProvisionError, ProvisionRequest

NAME = "flaky"


def _failures() -> dict[str, tuple[str, str]]:
    found = {}
    for item in filter(None, os.environ.get("FLAKY_FAIL", "").split(",")):
        zone, _, how = item.partition("=")
        kind, _, scope = how.partition(":")
        found[zone.strip()] = (kind or "capacity", scope or "zone")
    return found


class FlakyCloud(LocalCloud):
    """Sandboxes on this machine, priced like a cloud, failing on request."""

    name = NAME
    default_cpus = 2
    default_memory_gib = 4

    def provision(self, request: ProvisionRequest) -> ClusterHandle:
        zone = request.offering.zone
        log = os.environ.get("FLAKY_ATTEMPTS")
        if log:
            with open(log, "a") as file:
                file.write(f"{zone}\n")
        requests = os.environ.get("FLAKY_REQUESTS")
        if requests:
            with open(requests, "a") as file:
                fields = ("disk_size", "disk_tier", "image_id", "ports")
                file.write(json.dumps({f: getattr(request, f) for f in fields}) + "\n")
        if zone in os.environ.get("FLAKY_HANG", "").split(","):
            time.sleep(3600)
        outage = os.environ.get("FLAKY_SPOT_OUTAGE")
        if request.use_spot and outage and os.path.exists(outage):
            raise ProvisionError("capacity", "zone", f"injected: no spot capacity in {zone}")
        failures = _failures()
        failure = failures.get(zone) or failures.get("*")
        if failure:
            kind, scope = failure
            raise ProvisionError(kind, scope, f"injected {kind} failure in {zone}")
        handle = super().provision(request)
        offering = request.offering
        return dataclasses.replace(handle, cloud=NAME, region=offering.region, zone=offering.zone, use_spot=request.use_spot,
                                   hourly_price=offering.spot_price if request.use_spot else offering.price)


    def prepare_autostop(self, handle: ClusterHandle, down: bool) -> None:
        log = os.environ.get("FLAKY_AUTOSTOP")
        if log:
            with open(log, "a") as file:
                file.write(f"{handle.cluster} {'down' if down else 'stop'}\n")

    def wait_ready(self, handle: ClusterHandle, timeout: float) -> None:
        if os.environ.get("FLAKY_WAIT_HANG"):
            time.sleep(3600)
        super().wait_ready(handle, timeout)


@hookimpl
def skyk_clouds():
    return [FlakyCloud()]


@hookimpl
def skyk_catalog_offerings(catalog_dir: Path):
    return read_offerings(Path(__file__).with_name("vms.csv"), NAME, zone_column="AvailabilityZone")
