"""The network a cluster's nodes share, and each node's public address and interface.

In the attempt's resource group: a network security group open on SSH and the
task's ports, a virtual network with one subnet that uses it, and per node a
Standard, static public IP and a NIC in the subnet with that IP.
"""

from __future__ import annotations

from skyk.provision.ports import port_ranges

from skyk_azure import errors
from skyk_azure.session import Clients

NSG_NAME = "skyk-nsg"
VNET_NAME = "skyk-vnet"
SUBNET_NAME = "skyk-subnet"
#: The nodes' private addresses (each attempt has a network of its own).
ADDRESS_SPACE = "10.128.0.0/16"


def _ranges(ports: tuple[int, ...]) -> list[str]:
    return [str(first) if first == last else f"{first}-{last}" for first, last in port_ranges(ports)]


def create_shared(clients: Clients, group: str, region: str, labels: dict[str, str],
                  ports: tuple[int, ...]) -> str:
    """Make the security group and the virtual network; return the subnet's id."""
    network = clients.network
    rule = {"name": "skyk-inbound", "properties": {
        "protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 1000,
        "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
        "destinationPortRanges": _ranges(ports)}}
    nsg = errors.call(network.network_security_groups.begin_create_or_update, group, NSG_NAME,
                      {"location": region, "tags": labels,
                       "properties": {"securityRules": [rule]}}).result()
    vnet = errors.call(network.virtual_networks.begin_create_or_update, group, VNET_NAME, {
        "location": region, "tags": labels, "properties": {
            "addressSpace": {"addressPrefixes": [ADDRESS_SPACE]},
            "subnets": [{"name": SUBNET_NAME, "properties": {
                "addressPrefix": ADDRESS_SPACE, "networkSecurityGroup": {"id": nsg.id}}}]}}).result()
    return next(s.id for s in vnet.subnets if s.name == SUBNET_NAME)


def create_interface(clients: Clients, group: str, region: str, name: str, labels: dict[str, str],
                     subnet_id: str) -> str:
    """Make node ``name``'s public IP and NIC; return the NIC's id."""
    network = clients.network
    address = errors.call(network.public_ip_addresses.begin_create_or_update, group, f"{name}-ip", {
        "location": region, "tags": labels, "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static",
                       "publicIPAddressVersion": "IPv4"}}).result()
    nic = errors.call(network.network_interfaces.begin_create_or_update, group, f"{name}-nic", {
        "location": region, "tags": labels, "properties": {"ipConfigurations": [{
            "name": "ipconfig1", "properties": {
                "primary": True, "privateIPAllocationMethod": "Dynamic",
                "subnet": {"id": subnet_id}, "publicIPAddress": {"id": address.id}}}]}}).result()
    return nic.id


def addresses(clients: Clients, group: str, name: str) -> tuple[str, str | None]:
    """Node ``name``'s private address and its public one (None while it has none)."""
    network = clients.network
    nic = errors.call(network.network_interfaces.get, group, f"{name}-nic")
    config = next((c for c in nic.ip_configurations if c.primary), nic.ip_configurations[0])
    public = errors.call(network.public_ip_addresses.get, group, f"{name}-ip").ip_address
    return config.private_ip_address, public
