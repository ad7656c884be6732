"""The network a cluster's nodes share, and each node's public address and interface.

In the attempt's resource group: a network security group open on SSH and the
task's ports, a virtual network with one subnet, and per node a Standard,
static public IP and a NIC in the subnet with that IP and the security group
(on the NIC, not the subnet: so the group can be deleted right after the NICs).
"""

from __future__ import annotations

from skyk.provision.ports import port_ranges

from skyk_azure import errors, names, session
from skyk_azure.session import Clients

SUBNET_NAME = "skyk-subnet"
#: The nodes' private addresses (each attempt has a network of its own).
ADDRESS_SPACE = "10.128.0.0/16"


def _ranges(ports: tuple[int, ...]) -> list[str]:
    return [str(first) if first == last else f"{first}-{last}" for first, last in port_ranges(ports)]


def create_shared(clients: Clients, group: str, region: str, cluster: str, uid: str,
                  labels: dict[str, str], ports: tuple[int, ...]) -> tuple[str, str]:
    """Make the attempt's security group and virtual network; return their subnet's and
    the security group's ids."""
    network = clients.network
    rule = {"name": "skyk-inbound", "properties": {
        "protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 1000,
        "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
        "destinationPortRanges": _ranges(ports)}}
    nsg = errors.call(network.network_security_groups.begin_create_or_update, group,
                      names.security_group(cluster, uid),
                      {"location": region, "tags": labels,
                       "properties": {"securityRules": [rule]}}, polling=session.polling()).result()
    vnet = errors.call(network.virtual_networks.begin_create_or_update, group,
                       names.virtual_network(cluster, uid), {
                           "location": region, "tags": labels, "properties": {
                               "addressSpace": {"addressPrefixes": [ADDRESS_SPACE]},
                               "subnets": [{"name": SUBNET_NAME,
                                            "properties": {"addressPrefix": ADDRESS_SPACE}}]}}, polling=session.polling()).result()
    return next(s.id for s in vnet.subnets if s.name == SUBNET_NAME), nsg.id


def create_interface(clients: Clients, group: str, region: str, vm_name: str,
                     labels: dict[str, str], subnet_id: str, nsg_id: str) -> str:
    """Make VM ``vm_name``'s public IP and NIC; return the NIC's id."""
    network = clients.network
    address = errors.call(network.public_ip_addresses.begin_create_or_update, group,
                          names.public_ip(vm_name), {
                              "location": region, "tags": labels, "sku": {"name": "Standard"},
                              "properties": {"publicIPAllocationMethod": "Static",
                                             "publicIPAddressVersion": "IPv4"}}, polling=session.polling()).result()
    nic = errors.call(network.network_interfaces.begin_create_or_update, group, names.nic(vm_name), {
        "location": region, "tags": labels, "properties": {
            "networkSecurityGroup": {"id": nsg_id},
            "ipConfigurations": [{"name": "ipconfig1", "properties": {
                "primary": True, "privateIPAllocationMethod": "Dynamic",
                "subnet": {"id": subnet_id}, "publicIPAddress": {"id": address.id}}}]}}, polling=session.polling()).result()
    return nic.id


def addresses(clients: Clients, group: str, vm_name: str) -> tuple[str, str | None]:
    """VM ``vm_name``'s private address and its public one (None while it has none)."""
    network = clients.network
    nic = errors.call(network.network_interfaces.get, group, names.nic(vm_name))
    config = next((c for c in nic.ip_configurations if c.primary), nic.ip_configurations[0])
    public = errors.call(network.public_ip_addresses.get, group, names.public_ip(vm_name)).ip_address
    return config.private_ip_address, public
