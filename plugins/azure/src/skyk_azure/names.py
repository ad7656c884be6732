"""The names of what a launch attempt makes: all start with ``skyk-<cluster>-<uid>``.

The attempt's uid in every name keeps two attempts of a cluster (or two
clusters in one resource group the user named) from ever colliding, and
finds an attempt's OS disks by name (Azure does not copy a VM's tags to the
disk it makes for it).
"""

from __future__ import annotations

#: Leaves room in Linux's 64-character host names (a VM's name is its host name).
_CLUSTER_CHARS = 40


def prefix(cluster: str, uid: str) -> str:
    """What every name of attempt ``uid`` of ``cluster`` starts with."""
    return f"skyk-{cluster[:_CLUSTER_CHARS]}-{uid}"


def vm(cluster: str, uid: str, rank: int) -> str:
    """Node ``rank``'s VM (also its host name); its NIC, public IP and disk are named after it."""
    return f"{prefix(cluster, uid)}-{rank}"


def nic(vm_name: str) -> str:
    """The VM's network interface."""
    return f"{vm_name}-nic"


def public_ip(vm_name: str) -> str:
    """The VM's public IP address."""
    return f"{vm_name}-ip"


def os_disk(vm_name: str) -> str:
    """The VM's OS disk."""
    return f"{vm_name}-osdisk"


def security_group(cluster: str, uid: str) -> str:
    """The attempt's network security group."""
    return f"{prefix(cluster, uid)}-nsg"


def virtual_network(cluster: str, uid: str) -> str:
    """The attempt's virtual network."""
    return f"{prefix(cluster, uid)}-vnet"
