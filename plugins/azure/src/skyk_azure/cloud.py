"""The Azure cloud: VMs reached over SSH, credentials from a service principal or ``az login``.

This module is imported with the plugin, so it must not import an Azure SDK:
the modules that talk to ARM (:mod:`skyk_azure.session` and the rest) are
imported inside the methods that provision, which only ``launch``, ``stop``,
``start``, ``down`` and ``status -r`` call.

Everything a launch attempt makes lives in one resource group of its own,
tagged with the attempt from the moment it exists, so removing an attempt is
deleting its group, and a killed launch's group is found by that tag. In a
group the user names (:mod:`skyk_azure.shared_group`) its resources carry the
tag and are deleted one kind after the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from skyk.errors import SkykError
from skyk.provision.cloud import CredentialCheck, NodeState
from skyk.provision.ssh_cloud import SSHCloud
from skyk.provision.types import ClusterHandle, ProvisionAttempt, ProvisionError, ProvisionRequest

NAME = "azure"
_PRINCIPAL = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID")
_PRINCIPAL_SECRETS = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                      "AZURE_FEDERATED_TOKEN_FILE")
#: ARM handles many requests at once; more threads than this only queue.
_MAX_THREADS = 16


def _azure_config_dir() -> Path:
    return Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure").expanduser()


def cli_subscription() -> str | None:
    """Return the default subscription id of an ``az login`` session, if any."""
    profile = _azure_config_dir() / "azureProfile.json"
    try:
        # az writes this file with a UTF-8 byte-order mark.
        data = json.loads(profile.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    for subscription in data.get("subscriptions", []) if isinstance(data, dict) else []:
        if isinstance(subscription, dict) and subscription.get("isDefault"):
            return subscription.get("id")
    return None


class AzureCloud(SSHCloud):
    """Microsoft Azure virtual machines."""

    name = NAME
    display_name = "Azure"
    #: the admin user Azure makes on the VM (``adminUsername``) with the user's key
    ssh_user = "azureuser"

    def check_credentials(self) -> CredentialCheck:
        subscription = os.environ.get("AZURE_SUBSCRIPTION_ID")
        if all(os.environ.get(v) for v in _PRINCIPAL):
            if not any(os.environ.get(v) for v in _PRINCIPAL_SECRETS):
                return CredentialCheck(False, "service principal has no secret or certificate",
                                       hint="set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH")
            if not subscription:
                return CredentialCheck(False, "no subscription chosen",
                                       hint="set AZURE_SUBSCRIPTION_ID")
            return CredentialCheck(True, f"service principal, subscription {subscription}")
        from_cli = cli_subscription()
        if from_cli or (subscription and (_azure_config_dir() / "msal_token_cache.json").exists()):
            return CredentialCheck(True, f"az login, subscription {subscription or from_cli}")
        return CredentialCheck(False, "no Azure credentials found",
                               hint="run 'az login', or set AZURE_CLIENT_ID, AZURE_TENANT_ID,"
                               " AZURE_CLIENT_SECRET and AZURE_SUBSCRIPTION_ID")

    # -- provisioning ---------------------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> ClusterHandle:
        from azure.core.exceptions import AzureError
        from skyk.provision.cleanup import removed_on_failure
        from skyk.provision.ssh_keys import user_key

        from skyk_azure import (
            errors,
            images,
            names,
            network,
            resource_groups,
            session,
            shared_group,
            tags,
            vms,
        )

        offering = request.offering
        region = offering.region
        key = user_key()
        # Everything that can be checked is, before anything is created.
        try:
            clients = session.clients()
            session.authenticate(clients)
            image = images.reference(request)
            shared = shared_group.named()
            group = shared or _own_group(request.cluster, region, request.uid)
            # A read first: an endpoint that does not answer fails with nothing made.
            if not _group_exists(clients, group) and shared:
                raise ProvisionError("other", "cloud", f"resource group {shared} (named by"
                                     f" {shared_group.ENV}) does not exist in this subscription")
        except AzureError as exc:
            raise errors.classify(exc, region, offering.zone) from exc
        vm_names = [names.vm(request.cluster, request.uid, rank) for rank in range(request.num_nodes)]
        labels = tags.attempt_tags(request.cluster, request.uid)

        # From here on something may exist: any failure removes all the attempt made.
        def classify(exc: BaseException) -> BaseException:
            return errors.classify(exc, region, offering.zone) if isinstance(exc, AzureError) else exc

        def remove() -> None:
            _remove(clients, request.cluster, request.uid, shared, None if shared else group)

        with removed_on_failure(request.uid, remove, classify,
                                lambda exc: errors.classify(exc, region).reason):
            if not shared:
                resource_groups.create(clients, group, region, labels)
            subnet_id, nsg_id = network.create_shared(clients, group, region, request.cluster,
                                                      request.uid, labels, request.ports)

            def make(rank: int) -> tuple[str, str | None]:
                nic_id = network.create_interface(clients, group, region, vm_names[rank],
                                                  tags.attempt_tags(request.cluster, request.uid, rank),
                                                  subnet_id, nsg_id)
                vms.create(clients, group, vm_names[rank],
                           vms.body(request, rank, image, self.ssh_user, key, nic_id))
                return network.addresses(clients, group, vm_names[rank])

            found = _each(make, range(request.num_nodes))
        nodes = tuple(self._node(name, private, public, key, rank)
                      for rank, (name, (private, public)) in enumerate(zip(vm_names, found, strict=True)))
        return ClusterHandle.of(request, nodes, {"resource_group": group, "own_group": not shared,
                                                 "vms": vm_names})

    def query(self, handle: ClusterHandle) -> list[NodeState]:
        from skyk_azure import vms

        with _user_errors(f"look up cluster {handle.cluster}'s VMs", handle.region):
            clients, group = _clients(), _group_of(handle)
            if not _group_exists(clients, group):
                return ["missing"] * len(handle.nodes)
            found = _each(lambda node: vms.get(clients, group, node.node_id), handle.nodes)
            return [vms.node_state(vm, handle.use_spot) for vm in found]

    def stop(self, handle: ClusterHandle) -> None:
        from skyk_azure import errors, session, vms

        if handle.use_spot:
            raise SkykError(f"cluster {handle.cluster} runs on spot VMs, which skyk does not stop"
                            " (a stopped spot VM could not be told from an evicted one)",
                            hint=f"'skyk down {handle.cluster}' removes it")
        with _user_errors(f"stop cluster {handle.cluster}", handle.region):
            clients, group = _clients(), _group_of(handle)
            present = [vm for vm in _each(lambda n: vms.get(clients, group, n.node_id), handle.nodes)
                       if vm is not None]
            if not present:
                raise SkykError(f"cluster {handle.cluster} has no VMs left in Azure",
                                hint=f"'skyk down {handle.cluster}' forgets it")
            # Deallocated, not just powered off: a stopped but allocated VM is still billed.
            _each(lambda vm: errors.call(clients.compute.virtual_machines.begin_deallocate,
                                         group, vm.name, polling=session.polling()).result(),
                  [vm for vm in present if vms.power_state(vm) != "deallocated"])

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        from skyk.provision.ssh_keys import user_key

        from skyk_azure import errors, network, session, vms

        with _user_errors(f"start cluster {handle.cluster}", handle.region):
            clients, group = _clients(), _group_of(handle)
            found = _each(lambda n: vms.get(clients, group, n.node_id), handle.nodes)
            states = [vms.node_state(vm, handle.use_spot) for vm in found]
            for node, state in zip(handle.nodes, states, strict=True):
                if state in ("missing", "preempted", "terminated"):
                    raise SkykError(f"node {node.node_id} of cluster {handle.cluster} is {state},"
                                    " so the cluster cannot start",
                                    hint=f"'skyk down {handle.cluster}', then launch it again")
            _each(lambda vm: errors.call(clients.compute.virtual_machines.begin_start,
                                         group, vm.name, polling=session.polling()).result(),
                  [vm for vm in found if vms.power_state(vm) != "running"])
            # A static public IP keeps its address, but reading it again costs little.
            found_addresses = _each(lambda n: network.addresses(clients, group, n.node_id), handle.nodes)
        key = user_key()
        nodes = tuple(self._node(node.node_id, private, public, key, rank)
                      for rank, (node, (private, public))
                      in enumerate(zip(handle.nodes, found_addresses, strict=True)))
        return dataclasses.replace(handle, nodes=nodes)

    def terminate(self, handle: ClusterHandle) -> None:
        with _user_errors(f"remove cluster {handle.cluster}", handle.region):
            group = _group_of(handle)
            if handle.extra.get("own_group", True):
                _remove(_clients(), handle.cluster, handle.uid, own=group)
            else:
                _remove(_clients(), handle.cluster, handle.uid, shared=group)

    def find_attempt(self, attempt: ProvisionAttempt) -> list[str]:
        from skyk_azure import errors, names, resource_groups, shared_group

        with _user_errors(f"look up what launch attempt {attempt.uid} made", attempt.region):
            clients = _clients()
            found = []
            for group in resource_groups.find(clients, attempt.uid):
                vm_names = [vm.name for vm in errors.call(
                    lambda g=group: list(clients.compute.virtual_machines.list(g)))]
                found.append(f"resource group {group}"
                             + (f" (VMs {', '.join(sorted(vm_names))})" if vm_names else ""))
            # The group the user names now, where the attempt may have been made.
            if (shared := shared_group.named()) is not None:
                found += shared_group.find(clients, shared, attempt.uid,
                                           names.prefix(attempt.cluster, attempt.uid))
            return found

    def remove_attempt(self, attempt: ProvisionAttempt) -> None:
        from skyk_azure import shared_group

        with _user_errors(f"remove what launch attempt {attempt.uid} made", attempt.region):
            _remove(_clients(), attempt.cluster, attempt.uid, shared_group.named())

    def autostop_refusal(self, down: bool, use_spot: bool) -> str | None:
        # A VM that powers itself off stays allocated and billed in Azure, and
        # deallocating (or deleting) it takes ARM credentials a node does not
        # have: autostop is refused rather than leave a billed VM behind.
        return ("an Azure VM that powers itself off stays allocated and billed, and only ARM"
                " (with credentials skyk never puts on a node) can deallocate or delete it;"
                " autostop is not available on azure")

    def _node(self, name: str, private: str, public: str | None, key, rank: int):
        from skyk.provision.ssh_cloud import ssh_node

        return ssh_node(name, private, public, self.ssh_user, key, head=rank == 0)


def _clients():
    from skyk_azure import session

    return session.clients()


def _own_group(cluster: str, region: str, uid: str) -> str:
    from skyk_azure import resource_groups

    return resource_groups.group_name(cluster, region, uid)


def _group_of(handle: ClusterHandle) -> str:
    return handle.extra.get("resource_group") or _own_group(handle.cluster, handle.region, handle.uid)


def _remove(clients, cluster: str, uid: str, shared: str | None = None, own: str | None = None) -> None:
    """Delete what attempt ``uid`` made: its own resource groups (``own``, and any found by
    tag), and in the group ``shared`` the user named, if any, its resources there."""
    from skyk_azure import names, resource_groups, shared_group

    if shared is not None:
        shared_group.remove(clients, shared, uid, names.prefix(cluster, uid))
    resource_groups.delete(clients, [*([own] if own else []), *resource_groups.find(clients, uid)])


def _group_exists(clients, group: str) -> bool:
    from skyk_azure import errors

    return bool(errors.call(clients.resource.resource_groups.check_existence, group))


def _each(work: Callable[[Any], Any], items) -> list[Any]:
    """``work`` on every item at once (each is a few round trips to ARM); results in order.

    Waits for every item, then raises the first item's error, if any.
    """
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(_MAX_THREADS, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
    for future in futures:
        if future.exception() is not None:
            raise future.exception()
    return [future.result() for future in futures]


@contextlib.contextmanager
def _user_errors(action: str, region: str) -> Iterator[None]:
    """Turn Azure's errors in a CLI verb into one-line ``SkykError`` s saying what could not be done."""
    from azure.core.exceptions import AzureError

    from skyk_azure import errors

    try:
        yield
    except (AzureError, ProvisionError) as exc:
        raise errors.user_error(exc, action, region) from exc
