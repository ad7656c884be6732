"""Clusters in a resource group the user names (``SKYK_AZURE_RESOURCE_GROUP``).

Where a user may not create resource groups, skyk puts each attempt's
resources in the group they name, which must exist and is never deleted.
Removing an attempt then means deleting its own resources, found by the
attempt's tag (OS disks also by name), in the order Azure allows: VMs first
(a NIC cannot go while a VM uses it), then NICs (a public IP cannot go while
on a NIC), public IPs, leftover disks, the security group and the virtual network.
"""

from __future__ import annotations

import os

from azure.core.exceptions import ResourceNotFoundError

from skyk_azure import errors, session, tags
from skyk_azure.session import Clients

ENV = "SKYK_AZURE_RESOURCE_GROUP"

#: (what, client, operations) in the order they are deleted
_ORDER = (("VM", "compute", "virtual_machines"), ("NIC", "network", "network_interfaces"),
          ("public IP", "network", "public_ip_addresses"), ("disk", "compute", "disks"),
          ("security group", "network", "network_security_groups"),
          ("virtual network", "network", "virtual_networks"))


def named() -> str | None:
    """The resource group the user named, or None (skyk makes a group per attempt)."""
    return os.environ.get(ENV) or None


def _operations(clients: Clients, client: str, attribute: str):
    return getattr(getattr(clients, client), attribute)


def _of_attempt(clients: Clients, group: str, client: str, attribute: str, uid: str,
                name_prefix: str) -> list[str]:
    operations = _operations(clients, client, attribute)
    lister = operations.list_by_resource_group if attribute == "disks" else operations.list
    try:
        found = errors.call(lambda: list(lister(group)))
    except ResourceNotFoundError:
        return []
    return sorted(r.name for r in found if (r.tags or {}).get(tags.ATTEMPT) == uid
                  or (attribute == "disks" and r.name.startswith(name_prefix + "-")))


def find(clients: Clients, group: str, uid: str, name_prefix: str) -> list[str]:
    """What attempt ``uid`` holds in ``group``, one phrase each (``VM skyk-dev-1a2b-0``)."""
    return [f"{what} {name}" for what, client, attribute in _ORDER
            for name in _of_attempt(clients, group, client, attribute, uid, name_prefix)]


def remove(clients: Clients, group: str, uid: str, name_prefix: str) -> None:
    """Delete what attempt ``uid`` holds in ``group``, kind by kind, waiting for each kind."""
    for _, client, attribute in _ORDER:
        operations = _operations(clients, client, attribute)
        pollers = [errors.call(operations.begin_delete, group, name, polling=session.polling())
                   for name in _of_attempt(clients, group, client, attribute, uid, name_prefix)]
        for poller in pollers:
            try:
                poller.result()
            except ResourceNotFoundError:
                continue
