"""The cluster's virtual machines: what skyk asks ARM for, and what their states mean.

One VM per node, ``skyk-<cluster>-<uid>-<rank>`` in the attempt's resource group,
each with its own NIC (see :mod:`skyk_azure.network`) and a managed OS disk
that is deleted with it. The user's SSH key goes in ``osProfile`` for the
image's admin user; password login is off.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from skyk.provision.cloud import NodeState
from skyk.provision.ssh_keys import UserKey
from skyk.provision.types import ProvisionRequest

from skyk_azure import errors, names, session, tags
from skyk_azure.session import Clients

#: GiB of the OS disk when the task names none (SkyPilot's default).
DEFAULT_DISK_GB = 256
#: disk_tier -> the managed disk's storage type (Ultra disks cannot be OS disks).
DISK_TYPES = {"low": "Standard_LRS", "medium": "StandardSSD_LRS", "high": "Premium_LRS",
              "ultra": "Premium_LRS", "best": "Premium_LRS"}
DEFAULT_TIER = "medium"
#: What a spot VM becomes when Azure takes its capacity back: deleted, with its disk,
#: so nothing is billed for it; its NIC and public IP stay until ``skyk down``.
EVICTION_POLICY = "Delete"
#: Power states (``PowerState/<state>`` in the instance view) and what skyk calls them.
RUNNING = ("running", "starting")
STOPPED = ("deallocated", "deallocating", "stopped", "stopping")


def zone_of(zone: str | None) -> str | None:
    """Azure's zone number ("1", "2", "3") of a catalog zone (``eastus-1`` or ``1``)."""
    return zone.rsplit("-", 1)[-1] if zone else None


def body(request: ProvisionRequest, rank: int, image: dict[str, str], user: str, key: UserKey,
         nic_id: str) -> dict[str, Any]:
    """The ARM JSON of node ``rank``'s VM."""
    offering = request.offering
    name = names.vm(request.cluster, request.uid, rank)
    disk_type = DISK_TYPES.get(request.disk_tier or DEFAULT_TIER, DISK_TYPES[DEFAULT_TIER])
    properties: dict[str, Any] = {
        "hardwareProfile": {"vmSize": offering.instance_type},
        "storageProfile": {
            "imageReference": image,
            "osDisk": {"name": names.os_disk(name), "createOption": "FromImage",
                       "diskSizeGB": request.disk_size or DEFAULT_DISK_GB,
                       "managedDisk": {"storageAccountType": disk_type},
                       "deleteOption": "Delete"}},
        "osProfile": {
            "computerName": name, "adminUsername": user,
            "linuxConfiguration": {
                "disablePasswordAuthentication": True,
                "ssh": {"publicKeys": [{"path": f"/home/{user}/.ssh/authorized_keys",
                                        "keyData": key.public}]}}},
        "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]},
    }
    if request.use_spot:
        # maxPrice -1: pay up to the on-demand price, so price alone never evicts.
        properties.update(priority="Spot", evictionPolicy=EVICTION_POLICY,
                          billingProfile={"maxPrice": -1})
    out: dict[str, Any] = {"location": offering.region,
                           "tags": tags.attempt_tags(request.cluster, request.uid, rank),
                           "properties": properties}
    if offering.zone:
        out["zones"] = [zone_of(offering.zone)]
    return out


def create(clients: Clients, group: str, name: str, vm: dict[str, Any]) -> None:
    """Create the VM and wait until Azure has it running (or its creation failed)."""
    errors.call(clients.compute.virtual_machines.begin_create_or_update, group, name, vm, polling=session.polling()).result()


def get(clients: Clients, group: str, name: str):
    """The VM with its instance view, or None if Azure no longer has it (nor its group)."""
    try:
        return errors.call(clients.compute.virtual_machines.get, group, name, expand="instanceView")
    except ResourceNotFoundError:
        return None


def power_state(vm) -> str | None:
    """The VM's power state (``running``, ``deallocated``, ...), None while it has none."""
    view = getattr(vm, "instance_view", None)
    for status in getattr(view, "statuses", None) or ():
        if (status.code or "").startswith("PowerState/"):
            return status.code.split("/", 1)[1]
    return None


def node_state(vm, spot: bool) -> NodeState:
    """What a node whose VM is ``vm`` (None: gone) really is doing.

    A spot VM Azure deallocated is one it evicted (skyk never stops spot
    clusters); one it deleted is evicted too, as skyk deletes whole groups.
    """
    if vm is None:
        return "preempted" if spot else "missing"
    power = power_state(vm)
    if power in STOPPED:
        return "preempted" if spot and power.startswith("dealloc") else "stopped"
    return "running"  # running, starting, or still being created
