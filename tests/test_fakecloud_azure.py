"""The fake ARM (fakecloud.azure) driven by the official Azure SDK clients.

Twin tests need root, iproute2, util-linux, OpenSSH and sudo; without them
they are skipped, except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakecloud.azure import FakeARM
from fakecloud.twins import require_twin_tools, ssh_to_twin
from lifecycle_helpers import wait_for

pytest.importorskip("azure.mgmt.compute")

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError  # noqa: E402
from azure.mgmt.compute import ComputeManagementClient  # noqa: E402
from azure.mgmt.network import NetworkManagementClient  # noqa: E402
from azure.mgmt.resource.resources import ResourceManagementClient  # noqa: E402

LOCATION = "eastus"
USER = "azureuser"
#: Twins of this file: a bridge and subnet of their own, apart from the other beds.
BRIDGE, SUBNET = "skykaz0", "10.219.0.0/16"


class Clients:
    def __init__(self, fake: FakeARM):
        self.fake = fake
        credential = fake.credential()
        common = {"base_url": fake.endpoint, "connection_verify": str(fake.ca_file),
                  "polling_interval": 0.05, "retry_total": 0}
        self.resource = ResourceManagementClient(credential, fake.subscription_id, **common)
        self.network = NetworkManagementClient(credential, fake.subscription_id, **common)
        self.compute = ComputeManagementClient(credential, fake.subscription_id, **common)

    def network_for(self, group: str, *, static_ip: bool = False) -> str:
        """NSG, vnet with a subnet, public IP and NIC in ``group``; returns the NIC's id."""
        from azure.mgmt.network import models as n

        net = self.network
        nsg = net.network_security_groups.begin_create_or_update(group, "nsg", n.NetworkSecurityGroup(
            location=LOCATION, security_rules=[n.SecurityRule(
                name="ssh", protocol="Tcp", direction="Inbound", access="Allow", priority=100,
                source_address_prefix="*", source_port_range="*",
                destination_address_prefix="*", destination_port_range="22")])).result()
        assert nsg.provisioning_state == "Succeeded"
        assert nsg.security_rules[0].name == "ssh"
        vnet = net.virtual_networks.begin_create_or_update(group, "vnet", n.VirtualNetwork(
            location=LOCATION, address_space=n.AddressSpace(address_prefixes=["10.1.0.0/16"]),
            subnets=[n.Subnet(name="default", address_prefix="10.1.0.0/24")])).result()
        assert vnet.subnets[0].provisioning_state == "Succeeded"
        pip = net.public_ip_addresses.begin_create_or_update(group, "pip", n.PublicIPAddress(
            location=LOCATION, sku=n.PublicIPAddressSku(name="Standard"),
            public_ip_allocation_method="Static" if static_ip else "Dynamic")).result()
        assert pip.provisioning_state == "Succeeded"
        nic = net.network_interfaces.begin_create_or_update(group, "nic", n.NetworkInterface(
            location=LOCATION, network_security_group=n.NetworkSecurityGroup(id=nsg.id),
            ip_configurations=[n.NetworkInterfaceIPConfiguration(
                name="ipconfig1", subnet=n.Subnet(id=vnet.subnets[0].id),
                public_ip_address=n.PublicIPAddress(id=pip.id))])).result()
        assert nic.ip_configurations[0].private_ip_address.startswith("10.1.0.")
        return nic.id

    def vm_body(self, nic_id: str, key: str, *, size: str = "Standard_D2s_v5",
                spot: str | None = None) -> object:
        from azure.mgmt.compute import models as c

        vm = c.VirtualMachine(
            location=LOCATION, tags={"skyk-cluster": "c1"},
            hardware_profile=c.HardwareProfile(vm_size=size),
            storage_profile=c.StorageProfile(image_reference=c.ImageReference(
                publisher="Canonical", offer="ubuntu-24_04-lts", sku="server",
                version="latest")),
            os_profile=c.OSProfile(
                computer_name="head", admin_username=USER,
                linux_configuration=c.LinuxConfiguration(
                    disable_password_authentication=True,
                    ssh=c.SshConfiguration(public_keys=[c.SshPublicKey(
                        path=f"/home/{USER}/.ssh/authorized_keys", key_data=key)]))),
            network_profile=c.NetworkProfile(
                network_interfaces=[c.NetworkInterfaceReference(id=nic_id)]))
        if spot:
            vm.priority, vm.eviction_policy = "Spot", spot
            vm.billing_profile = c.BillingProfile(max_price=-1)
        return vm

    def power(self, group: str, name: str) -> str:
        view = self.compute.virtual_machines.instance_view(group, name)
        return next(s.code for s in view.statuses if s.code.startswith("PowerState/"))

    def public_ip(self, group: str) -> str | None:
        return self.network.public_ip_addresses.get(group, "pip").ip_address


@pytest.fixture
def fake():
    with FakeARM() as bed:
        yield bed
    assert bed.errors == []


@pytest.fixture
def clients(fake):
    return Clients(fake)


def _group(clients: Clients, name: str = "rg1") -> None:
    clients.resource.resource_groups.create_or_update(name, {"location": LOCATION,
                                                             "tags": {"owner": "skyk"}})


def test_resource_group_lifecycle_with_tags(clients, fake):
    groups = clients.resource.resource_groups
    assert not groups.check_existence("RG1")
    _group(clients)
    got = groups.get("rg1")
    assert (got.location, got.tags, got.properties.provisioning_state) == \
        (LOCATION, {"owner": "skyk"}, "Succeeded")
    assert groups.check_existence("Rg1")  # paths are case-insensitive
    assert [g.name for g in groups.list()] == ["rg1"]
    with pytest.raises(HttpResponseError) as info:
        groups.create_or_update("rg1", {"location": "westeurope"})
    assert info.value.error.code == "InvalidResourceGroupLocation"
    groups.begin_delete("rg1").result()
    assert not groups.check_existence("rg1")
    with pytest.raises(ResourceNotFoundError) as info:
        groups.get("rg1")
    assert info.value.status_code == 404
    assert info.value.error.code == "ResourceGroupNotFound"
    assert "rg1" in info.value.error.message
    actions = [c.action for c in fake.calls]
    assert "token" in actions and "group_delete" in actions and "operation_get" in actions


def test_vm_lifecycle_power_states_and_group_delete(clients, fake):
    _group(clients)
    nic_id = clients.network_for("rg1")
    vms = clients.compute.virtual_machines
    vm = vms.begin_create_or_update("rg1", "head",
                                    clients.vm_body(nic_id, "ssh-ed25519 AAAA test")).result()
    assert (vm.provisioning_state, vm.tags) == ("Succeeded", {"skyk-cluster": "c1"})
    assert vm.os_profile.linux_configuration.ssh.public_keys[0].key_data == \
        "ssh-ed25519 AAAA test"
    assert clients.power("rg1", "head") == "PowerState/running"
    expanded = vms.get("rg1", "head", expand="instanceView")
    assert "PowerState/running" in [s.code for s in expanded.instance_view.statuses]
    assert clients.public_ip("rg1")
    vm_calls = [c for c in fake.calls if c.action == "vm_create"]
    assert vm_calls[0].status == 201
    polls = [c for c in fake.calls if c.action == "operation_get"]
    assert len(polls) >= 2

    vms.begin_deallocate("rg1", "head").result()
    assert clients.power("rg1", "head") == "PowerState/deallocated"
    assert clients.public_ip("rg1") is None  # a dynamic address goes with deallocation
    vms.begin_start("rg1", "head").result()
    assert clients.power("rg1", "head") == "PowerState/running"
    vms.begin_power_off("rg1", "head").result()
    assert clients.power("rg1", "head") == "PowerState/stopped"

    with pytest.raises(HttpResponseError) as info:  # the NIC is the VM's
        clients.network.network_interfaces.begin_delete("rg1", "nic").result()
    assert info.value.error.code == "NicInUse"

    clients.resource.resource_groups.begin_delete("rg1").result()
    assert fake.resources() == []
    with pytest.raises(ResourceNotFoundError) as info:
        vms.get("rg1", "head")
    assert info.value.error.code == "ResourceGroupNotFound"


def test_404_shapes(clients):
    _group(clients)
    with pytest.raises(ResourceNotFoundError) as info:
        clients.compute.virtual_machines.get("rg1", "nope")
    assert info.value.error.code == "ResourceNotFound"
    assert "Microsoft.Compute/virtualMachines/nope" in info.value.error.message
    with pytest.raises(ResourceNotFoundError) as info:
        clients.network.network_interfaces.get("rg1", "nope")
    assert info.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        clients.network.virtual_networks.get("missing-rg", "vnet")
    assert info.value.error.code == "ResourceGroupNotFound"
    # deleting what is not there succeeds (204), as in ARM
    clients.network.public_ip_addresses.begin_delete("rg1", "nope").result()


def test_capacity_fault_is_the_operations_error_code(clients, fake):
    _group(clients)
    nic_id = clients.network_for("rg1")
    rule = fake.fail("AllocationFailed", location=LOCATION, vm_size="Standard_NC24ads_A100_v4")
    vms = clients.compute.virtual_machines
    poller = vms.begin_create_or_update(
        "rg1", "gpu", clients.vm_body(nic_id, "ssh-ed25519 AAAA", size="Standard_NC24ads_A100_v4"))
    with pytest.raises(HttpResponseError) as info:
        poller.result()
    assert info.value.error.code == "AllocationFailed"
    assert rule.hits == 1
    assert vms.get("rg1", "gpu").provisioning_state == "Failed"  # Azure keeps the failed VM


def test_synchronous_faults(clients, fake):
    _group(clients)
    nic_id = clients.network_for("rg1")
    fake.fail("SkuNotAvailable", spot=True)
    with pytest.raises(HttpResponseError) as info:
        clients.compute.virtual_machines.begin_create_or_update(
            "rg1", "s", clients.vm_body(nic_id, "k", spot="Deallocate")).result()
    assert (info.value.status_code, info.value.error.code) == (409, "SkuNotAvailable")
    fake.fail("AuthorizationFailed", action="group_get")
    with pytest.raises(HttpResponseError) as info:
        clients.resource.resource_groups.get("rg1")
    assert (info.value.status_code, info.value.error.code) == (403, "AuthorizationFailed")
    fake.fail("TooManyRequests", action="group_get")
    with pytest.raises(HttpResponseError) as info:
        clients.resource.resource_groups.get("rg1")
    assert info.value.status_code == 429
    assert clients.resource.resource_groups.get("rg1").name == "rg1"
    faults = [(c.action, c.status, c.error) for c in fake.calls if c.fault]
    assert faults == [("vm_create", 409, "SkuNotAvailable"),
                      ("group_get", 403, "AuthorizationFailed"),
                      ("group_get", 429, "TooManyRequests")]


def test_wrong_secret_and_no_token(fake):
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential

    wrong = ClientSecretCredential(fake.tenant_id, fake.client_id, "wrong",
                                   authority=fake.endpoint, disable_instance_discovery=True,
                                   connection_verify=str(fake.ca_file))
    with pytest.raises(ClientAuthenticationError):
        wrong.get_token("https://management.azure.com/.default")
    assert [(c.status, c.error) for c in fake.calls if c.action == "token"] == \
        [(401, "invalid_client")]
    import requests

    answer = requests.get(f"{fake.endpoint}/subscriptions/{fake.subscription_id}/resourcegroups"
                          "?api-version=2022-09-01", verify=str(fake.ca_file), timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_env_names_the_endpoint_and_ca(fake):
    env = fake.env()
    assert env["AZURE_AUTHORITY_HOST"] == env["AZURE_RESOURCE_MANAGER_ENDPOINT"] == fake.endpoint
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == str(fake.ca_file)
    assert Path(env["REQUESTS_CA_BUNDLE"]).read_text().startswith("-----BEGIN CERTIFICATE")


# -- with node twins ----------------------------------------------------------------------

def _ssh(key: Path, address: str, command: str) -> subprocess.CompletedProcess:
    return ssh_to_twin(key, address, command, USER)


@pytest.fixture
def twin_bed(tmp_path):
    require_twin_tools()
    from fakecloud.twins import TwinHost

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, capture_output=True)
    with TwinHost(tmp_path / "twins", bridge=BRIDGE, subnet=SUBNET) as host, \
            FakeARM(twins=host) as bed:
        yield bed, Clients(bed), key, host
    assert bed.errors == []


def test_twin_ssh_login_sudo_deallocate_start_and_evict(twin_bed):
    fake, clients, key, host = twin_bed
    _group(clients)
    nic_id = clients.network_for("rg1")
    vms = clients.compute.virtual_machines
    public_key = key.with_suffix(".pub").read_text().strip()
    vm = vms.begin_create_or_update(
        "rg1", "head", clients.vm_body(nic_id, public_key, spot="Deallocate")).result()
    twin = fake.twin(vm.id)
    assert twin is not None and twin.state == "running"
    nic = clients.network.network_interfaces.get("rg1", "nic")
    assert nic.ip_configurations[0].private_ip_address == twin.private_ip
    address = clients.public_ip("rg1")
    assert address == twin.public_ip
    done = _ssh(key, address, "whoami && sudo -n true && echo sudo-ok")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [USER, "sudo-ok"]

    vms.begin_deallocate("rg1", "head").result()
    assert twin.state == "stopped" and clients.public_ip("rg1") is None
    vms.begin_start("rg1", "head").result()
    assert twin.state == "running"
    assert clients.public_ip("rg1") == twin.public_ip != address  # a new public address
    assert _ssh(key, twin.public_ip, "true").returncode == 0

    fake.evict(vm.id)
    assert clients.power("rg1", "head") == "PowerState/deallocated"
    assert twin.state == "stopped"

    vms.begin_delete("rg1", "head").result()
    assert twin.state == "terminated"
    with pytest.raises(ResourceNotFoundError):
        vms.get("rg1", "head")


def test_twin_evict_delete_policy(twin_bed):
    fake, clients, key, host = twin_bed
    _group(clients)
    nic_id = clients.network_for("rg1")
    public_key = key.with_suffix(".pub").read_text().strip()
    vm = clients.compute.virtual_machines.begin_create_or_update(
        "rg1", "w", clients.vm_body(nic_id, public_key, spot="Delete")).result()
    twin = fake.twin(vm.id)
    fake.evict(vm.id)
    assert twin.state == "terminated"
    with pytest.raises(ResourceNotFoundError):
        clients.compute.virtual_machines.get("rg1", "w")
    assert clients.network.network_interfaces.get("rg1", "nic").virtual_machine is None

    # The NIC is free again; a group delete takes the next VM's twin with it.
    again = clients.compute.virtual_machines.begin_create_or_update(
        "rg1", "w2", clients.vm_body(nic_id, public_key)).result()
    second = fake.twin(again.id)
    assert second is not None and second.state == "running"
    clients.resource.resource_groups.begin_delete("rg1").result()
    assert second.state == "terminated"
    assert host.twins() == []


def test_env_alone_points_the_sdk_at_the_fake(fake):
    """A subprocess with env() and no test switches: the CA bundle, authority and base URL."""
    script = textwrap.dedent("""\
        import os
        from azure.identity import EnvironmentCredential
        from azure.mgmt.resource.resources import ResourceManagementClient

        credential = EnvironmentCredential(disable_instance_discovery=True)
        client = ResourceManagementClient(credential, os.environ["AZURE_SUBSCRIPTION_ID"],
                                          base_url=os.environ["AZURE_RESOURCE_MANAGER_ENDPOINT"])
        client.resource_groups.create_or_update("from-env", {"location": "westus2"})
        print([g.name for g in client.resource_groups.list()])
        """)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AZURE_") and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
    done = subprocess.run([sys.executable, "-c", script], env={**env, **fake.env()},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['from-env']"


def test_start_can_fail_for_capacity(clients, fake):
    _group(clients)
    nic_id = clients.network_for("rg1")
    vms = clients.compute.virtual_machines
    vms.begin_create_or_update("rg1", "head", clients.vm_body(nic_id, "k")).result()
    vms.begin_deallocate("rg1", "head").result()
    fake.fail("AllocationFailed", action="vm_start")
    with pytest.raises(HttpResponseError) as info:
        vms.begin_start("rg1", "head").result()
    assert info.value.error.code == "AllocationFailed"
    assert clients.power("rg1", "head") == "PowerState/deallocated"
    vms.begin_start("rg1", "head").result()  # the rule answered once
    assert clients.power("rg1", "head") == "PowerState/running"


def test_async_operation_reports_in_progress_first(clients, fake):
    _group(clients)
    nic_id = clients.network_for("rg1")
    poller = clients.compute.virtual_machines.begin_create_or_update(
        "rg1", "head", clients.vm_body(nic_id, "k"))
    poller.result()
    create = next(c for c in fake.calls if c.action == "vm_create")
    assert create.status == 201
    import requests

    token = fake.credential().get_token("https://management.azure.com/.default").token
    vm = requests.get(f"{fake.endpoint}/subscriptions/{fake.subscription_id}/resourceGroups/rg1"
                      "/providers/Microsoft.Compute/virtualMachines/head?api-version=2024-07-01",
                      headers={"Authorization": f"Bearer {token}"}, verify=str(fake.ca_file),
                      timeout=10).json()
    assert vm["properties"]["provisioningState"] == "Succeeded"
    answer = requests.post(
        f"{fake.endpoint}{vm['id']}/deallocate?api-version=2024-07-01",
        headers={"Authorization": f"Bearer {token}"}, verify=str(fake.ca_file), timeout=10)
    assert answer.status_code == 202
    url = answer.headers["Azure-AsyncOperation"]
    statuses = []
    while not statuses or statuses[-1] == "InProgress":
        statuses.append(requests.get(url, headers={"Authorization": f"Bearer {token}"},
                                     verify=str(fake.ca_file), timeout=10).json()["status"])
    assert statuses[0] == "InProgress" and statuses[-1] == "Succeeded"


# -- managed disks, tag filters, guest shutdown ------------------------------------------

def _disks(clients: Clients, group: str = "rg1") -> dict[str, object]:
    return {d.name: d for d in clients.compute.disks.list_by_resource_group(group)}


@pytest.mark.parametrize("option", ["Delete", "Detach"])
def test_the_os_disk_is_a_managed_disk_deleted_or_detached_with_its_vm(clients, option):
    from azure.mgmt.compute import models as c

    _group(clients)
    nic_id = clients.network_for("rg1")
    body = clients.vm_body(nic_id, "k")
    body.storage_profile.os_disk = c.OSDisk(
        name="head-osdisk", create_option="FromImage", disk_size_gb=256, delete_option=option,
        managed_disk=c.ManagedDiskParameters(storage_account_type="Premium_LRS"))
    vms = clients.compute.virtual_machines
    vm = vms.begin_create_or_update("rg1", "head", body).result()
    assert vm.storage_profile.os_disk.managed_disk.id.endswith("/disks/head-osdisk")
    disk = clients.compute.disks.get("rg1", "head-osdisk")
    assert (disk.disk_size_gb, disk.sku.name, disk.managed_by, disk.disk_state) == \
        (256, "Premium_LRS", vm.id, "Attached")
    with pytest.raises(HttpResponseError) as info:  # still the VM's
        clients.compute.disks.begin_delete("rg1", "head-osdisk").result()
    assert info.value.error.code == "OperationNotAllowed"

    vms.begin_delete("rg1", "head").result()
    if option == "Delete":
        assert _disks(clients) == {}
    else:
        left = clients.compute.disks.get("rg1", "head-osdisk")
        assert (left.managed_by, left.disk_state) == (None, "Unattached")
        clients.compute.disks.begin_delete("rg1", "head-osdisk").result()
        assert _disks(clients) == {}


def test_a_vm_without_disk_name_gets_one_and_the_group_delete_takes_it(clients, fake):
    _group(clients)
    nic_id = clients.network_for("rg1")
    clients.compute.virtual_machines.begin_create_or_update(
        "rg1", "head", clients.vm_body(nic_id, "k")).result()
    (name,) = _disks(clients)
    assert name.startswith("head_OsDisk_1_")
    clients.resource.resource_groups.begin_delete("rg1").result()
    assert fake.resources() == []


def test_an_image_reference_must_name_an_image(clients):
    from azure.mgmt.compute import models as c

    _group(clients)
    nic_id = clients.network_for("rg1")
    body = clients.vm_body(nic_id, "k")
    body.storage_profile.image_reference = c.ImageReference(publisher="Canonical")
    with pytest.raises(HttpResponseError) as info:
        clients.compute.virtual_machines.begin_create_or_update("rg1", "bad", body).result()
    assert info.value.error.code == "InvalidParameter"


def test_resource_groups_are_listed_by_tag(clients):
    groups = clients.resource.resource_groups
    groups.create_or_update("a", {"location": LOCATION, "tags": {"skyk-attempt": "u1"}})
    groups.create_or_update("b", {"location": LOCATION, "tags": {"skyk-attempt": "u2"}})
    groups.create_or_update("c", {"location": LOCATION})
    assert [g.name for g in groups.list(filter="tagName eq 'skyk-attempt' and tagValue eq 'u2'")] \
        == ["b"]
    assert sorted(g.name for g in groups.list(filter="tagName eq 'skyk-attempt'")) == ["a", "b"]


def test_a_public_ip_on_a_nic_cannot_be_deleted(clients):
    _group(clients)
    clients.network_for("rg1")
    with pytest.raises(HttpResponseError) as info:
        clients.network.public_ip_addresses.begin_delete("rg1", "pip").result()
    assert info.value.error.code == "PublicIPAddressCannotBeDeleted"
    clients.network.network_interfaces.begin_delete("rg1", "nic").result()
    clients.network.public_ip_addresses.begin_delete("rg1", "pip").result()


def test_a_guest_poweroff_leaves_the_vm_stopped_but_allocated(twin_bed):
    fake, clients, key, host = twin_bed
    _group(clients)
    nic_id = clients.network_for("rg1", static_ip=True)
    public_key = key.with_suffix(".pub").read_text().strip()
    vm = clients.compute.virtual_machines.begin_create_or_update(
        "rg1", "head", clients.vm_body(nic_id, public_key)).result()
    twin = fake.twin(vm.id)
    # The connection may drop as the node goes down: the state is what counts.
    _ssh(key, twin.public_ip, "sudo -n poweroff")
    wait_for(lambda: clients.power("rg1", "head") == "PowerState/stopped", timeout=60,
             what="the VM to be stopped")
    assert twin.state == "stopped"
    clients.compute.virtual_machines.begin_deallocate("rg1", "head").result()
    assert clients.power("rg1", "head") == "PowerState/deallocated"
    clients.compute.virtual_machines.begin_start("rg1", "head").result()
    assert twin.state == "running" and clients.power("rg1", "head") == "PowerState/running"
