"""Compute Engine instances: building a node's insert, making a cluster's nodes, finding them.

Each node is one ``instances.insert`` named ``{cluster}-{uid}-{rank}``,
labelled with its cluster, attempt and rank from the start, with a
``requestId`` derived from the attempt and rank, so a retried insert never
makes a second VM. The nodes of an attempt are inserted together and their
operations awaited; any failure is the caller's to clean up (by label).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from skyk.provision.cloud import NodeState
from skyk.provision.types import ProvisionError, ProvisionRequest

from skyk_gcp import errors, labels, operations, session
from skyk_gcp.catalog import TPU_INSTANCE, fixed_gpu
from skyk_gcp.images import Image

#: GiB of the boot disk when the task names no disk_size (SkyPilot's default).
DEFAULT_DISK_GIB = 256
#: Persistent disk type per disk tier ("best": the fastest every machine type takes).
DISK_TIERS = {"low": "pd-standard", "medium": "pd-balanced", "high": "pd-ssd",
              "ultra": "pd-extreme", "best": "pd-ssd"}
DEFAULT_DISK_TIER = "medium"
#: Machine series that take Hyperdisk only, whatever the tier.
HYPERDISK_ONLY = ("n4-", "c4-", "c4a-", "c4d-", "x4-", "a4-")
#: GPUs that attach to N1 machines, by the catalog's name: GCE's accelerator type.
N1_ACCELERATORS = {"T4": "nvidia-tesla-t4", "V100": "nvidia-tesla-v100", "P100": "nvidia-tesla-p100",
                   "P4": "nvidia-tesla-p4", "K80": "nvidia-tesla-k80"}
#: GCE statuses of an instance that is (or is becoming) up, and of one that is stopped.
RUNNING = ("PROVISIONING", "STAGING", "RUNNING", "REPAIRING")
STOPPED = ("STOPPING", "TERMINATED", "SUSPENDING", "SUSPENDED")
#: seconds an insert, stop, start or delete operation has to be done
OPERATION_TIMEOUT = 300.0
#: first and longest pause between two looks at instances that are changing state
FIRST_POLL = 0.2
MAX_POLL = 5.0


def accelerators(request: ProvisionRequest) -> list:
    """The ``guestAccelerators`` of a node: N1's attached GPUs (others come with the machine type)."""
    from google.cloud import compute_v1

    offering = request.offering
    if offering.instance_type == TPU_INSTANCE:
        raise ProvisionError("unsupported", "cloud", f"{offering.accelerator}: the gcp plugin makes"
                             " Compute Engine VMs, not TPU VMs")
    if not offering.accelerator or fixed_gpu(offering.instance_type):
        return []
    kind = N1_ACCELERATORS.get(offering.accelerator)
    if kind is None:
        raise ProvisionError("unsupported", "cloud", f"{offering.accelerator} cannot be attached to"
                             f" {offering.instance_type}")
    return [compute_v1.AcceleratorConfig(
        accelerator_count=int(offering.accelerator_count),
        accelerator_type=f"zones/{offering.zone}/acceleratorTypes/{kind}")]


def boot_disk(request: ProvisionRequest, image: Image, name: str):
    """The boot disk: ``disk_size`` GiB (default 256) of the tier's type, deleted with the VM."""
    from google.cloud import compute_v1

    offering = request.offering
    size = request.disk_size or max(DEFAULT_DISK_GIB, image.size)
    if size < image.size:
        raise ProvisionError("other", "cloud", f"disk_size {size} GiB is smaller than image"
                             f" {image.link}'s {image.size} GiB")
    kind = ("hyperdisk-balanced" if offering.instance_type.startswith(HYPERDISK_ONLY)
            else DISK_TIERS[request.disk_tier or DEFAULT_DISK_TIER])
    return compute_v1.AttachedDisk(
        boot=True, auto_delete=True, device_name=name,
        initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=image.link, disk_size_gb=size,
            disk_type=f"zones/{offering.zone}/diskTypes/{kind}",
            labels=labels.attempt_labels(request.cluster, request.uid)))


def scheduling(request: ProvisionRequest, gpus: bool):
    """Spot (deleted when preempted) or standard; GPU hosts cannot live-migrate."""
    from google.cloud import compute_v1

    if request.use_spot:
        return compute_v1.Scheduling(provisioning_model="SPOT", instance_termination_action="DELETE",
                                     on_host_maintenance="TERMINATE", automatic_restart=False)
    if gpus:
        return compute_v1.Scheduling(on_host_maintenance="TERMINATE", automatic_restart=True)
    return compute_v1.Scheduling()


def instance(request: ProvisionRequest, image: Image, rank: int, ssh_keys: str,
             firewall_tag: str | None):
    """The ``compute_v1.Instance`` of node ``rank``."""
    from google.cloud import compute_v1

    offering = request.offering
    name = labels.instance_name(request.cluster, request.uid, rank)
    gpus = accelerators(request)
    return compute_v1.Instance(
        name=name, machine_type=f"zones/{offering.zone}/machineTypes/{offering.instance_type}",
        labels=labels.attempt_labels(request.cluster, request.uid, rank),
        disks=[boot_disk(request, image, name)],
        network_interfaces=[compute_v1.NetworkInterface(
            network="global/networks/default",
            access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
        guest_accelerators=gpus,
        scheduling=scheduling(request, bool(gpus) or bool(offering.accelerator)),
        # GCE's guest agent makes the user from ssh-keys, with passwordless sudo.
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="ssh-keys", value=ssh_keys)]),
        tags=compute_v1.Tags(items=[firewall_tag]) if firewall_tag else None)


def insert(request: ProvisionRequest, nodes: list) -> None:
    """Insert every node of ``nodes`` at once and wait for their operations; raise the first error."""
    client = session.client("InstancesClient")
    project, zone = session.project(), request.offering.zone

    def one(node) -> None:
        from google.cloud import compute_v1

        insert = compute_v1.InsertInstanceRequest(
            project=project, zone=zone, instance_resource=node,
            request_id=labels.request_id(request.cluster, request.uid, node.name))
        op = errors.call(client.insert_unary, request=insert)
        operations.wait(op, OPERATION_TIMEOUT, zone=zone)

    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        futures = [pool.submit(one, node) for node in nodes]
        failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        # A capacity or quota error says most: prefer one over a knock-on failure.
        failures.sort(key=lambda e: not isinstance(e, errors.OperationError))
        raise failures[0]


def get(zone: str, name: str):
    """Instance ``name`` of ``zone``, or None if GCE does not know it."""
    try:
        return errors.call(session.client("InstancesClient").get, project=session.project(),
                           zone=zone, instance=name)
    except errors.api_errors() as exc:
        if errors.is_not_found(exc):
            return None
        raise


def find(uid: str) -> list:
    """Every instance attempt ``uid`` made, in any zone (``aggregatedList`` by its label)."""
    from google.cloud import compute_v1

    request = compute_v1.AggregatedListInstancesRequest(project=session.project(),
                                                        filter=labels.attempt_filter(uid))
    pages = errors.call(session.client("InstancesClient").aggregated_list, request=request)
    return [i for _, scoped in pages for i in scoped.instances]


def zone_of(instance) -> str:
    """The zone name of a described instance."""
    return instance.zone.rstrip("/").rsplit("/", 1)[-1]


def addresses(instance) -> tuple[str, str | None]:
    """(internal IP, external IP or None) of a described instance."""
    nic = instance.network_interfaces[0] if instance.network_interfaces else None
    if nic is None:
        return "", None
    nat = next((c.nat_i_p for c in nic.access_configs if c.nat_i_p), None)
    return nic.network_i_p, nat


def wait_running(zone: str, names: list[str], timeout: float) -> list:
    """Poll until every instance of ``names`` runs with its addresses; return them in order.

    Raises when one is gone or stopped on the way, and a ``timeout`` error
    after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pause = FIRST_POLL
    while True:
        found = [get(zone, name) for name in names]
        for name, node in zip(names, found, strict=True):
            if node is None or node.status in ("STOPPING", "TERMINATED", "SUSPENDED"):
                what = "gone" if node is None else node.status
                raise ProvisionError("other", "zone", f"instance {name} is {what} while starting")
        waiting = [n.name for n in found if n.status != "RUNNING" or not all(addresses(n))]
        if not waiting:
            return found
        if time.monotonic() + pause > deadline:
            raise ProvisionError("timeout", "zone", f"instance(s) {', '.join(waiting)} not running"
                                 f" with an address after {timeout:g}s")
        time.sleep(pause)
        pause = min(pause * 1.5, MAX_POLL)


def node_state(node, spot: bool, preempted: bool) -> NodeState:
    """What a node is doing, from its instance (None: GCE no longer knows it)."""
    if preempted:
        return "preempted"
    if node is None:
        return "missing"
    if node.status in RUNNING:
        return "running"
    if node.status in STOPPED:
        return "stopped"
    return "terminated"


def act(zone: str, names: list[str], verb: str, allow_missing: bool = False) -> None:
    """``stop``, ``start`` or ``delete`` instances ``names`` at once and wait until done.

    With ``allow_missing``, an instance GCE no longer knows counts as done.
    """
    client = session.client("InstancesClient")
    method = getattr(client, f"{verb}_unary")
    pending = []
    for name in names:
        try:
            pending.append(errors.call(method, project=session.project(), zone=zone, instance=name))
        except errors.api_errors() as exc:
            if not (allow_missing and errors.is_not_found(exc)):
                raise
    for op in pending:
        operations.wait(op, OPERATION_TIMEOUT, zone=zone)
