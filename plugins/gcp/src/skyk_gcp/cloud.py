"""The GCP cloud: Compute Engine VMs reached over SSH, credentials found the way gcloud finds them.

This module is imported with the plugin, so it must not import a Google SDK:
the modules that talk to Compute Engine (:mod:`skyk_gcp.session` and the
rest) are imported inside the methods that provision, which only ``launch``,
``stop``, ``start``, ``down`` and ``status -r`` call.

What a launch attempt makes (instances and their boot disks, labelled with
the attempt; one firewall rule named after it) is found by the attempt
whenever a handle cannot be trusted to list it all.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from skyk.errors import SkykError
from skyk.provision.cloud import CredentialCheck, NodeState
from skyk.provision.ssh_cloud import SSHCloud
from skyk.provision.types import ClusterHandle, ProvisionAttempt, ProvisionError, ProvisionRequest

NAME = "gcp"
#: seconds new (or restarted) instances have to be running with their addresses
RUNNING_TIMEOUT = 300.0


def _gcloud_dir() -> Path:
    return Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud").expanduser()


def _credentials_file() -> Path | None:
    configured = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if configured:
        return Path(configured).expanduser()
    default = _gcloud_dir() / "application_default_credentials.json"
    return default if default.exists() else None


def _gcloud_project() -> str | None:
    config = configparser.ConfigParser()
    name = "default"
    active = _gcloud_dir() / "active_config"
    if active.exists():
        name = active.read_text().strip() or name
    config.read(_gcloud_dir() / "configurations" / f"config_{name}")
    return config.get("core", "project", fallback=None)


def _validate(info: object) -> str | None:
    """Check a credentials file's content offline; return the project it names, if any.

    Raises ValueError when google-auth would refuse it.
    """
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    if not isinstance(info, dict):
        raise ValueError("not a JSON object")
    kind = info.get("type")
    if kind == "service_account":
        service_account.Credentials.from_service_account_info(info)
    elif kind == "authorized_user":
        user_credentials.Credentials.from_authorized_user_info(info)
    elif kind not in ("external_account", "impersonated_service_account"):
        raise ValueError(f"unknown credential type {kind!r}")
    return info.get("project_id") or info.get("quota_project_id")


def configured_project(file_project: str | None = None) -> str | None:
    """The project chosen by the environment, else the credentials file's, else gcloud's."""
    return (os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
            or file_project or _gcloud_project())


class GCPCloud(SSHCloud):
    """Google Compute Engine."""

    name = NAME
    display_name = "GCP"
    #: The user GCE's guest agent makes from the ``ssh-keys`` metadata (SkyPilot's name for it).
    ssh_user = "gcpuser"

    def check_credentials(self) -> CredentialCheck:
        path = _credentials_file()
        if path is None:
            return CredentialCheck(False, "no application-default credentials found",
                                   hint="run 'gcloud auth application-default login' or set"
                                   " GOOGLE_APPLICATION_CREDENTIALS to a service-account key")
        try:
            info = json.loads(path.read_text())
            file_project = _validate(info)
        except (OSError, ValueError) as exc:
            return CredentialCheck(False, f"unusable credentials file {path}: {exc}".splitlines()[0],
                                   hint="create a new key or rerun 'gcloud auth application-default login'")
        project = configured_project(file_project)
        if not project:
            return CredentialCheck(False, "credentials found but no project chosen",
                                   hint="set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project ID'")
        return CredentialCheck(True, f"credentials from {path.name}, project {project}")

    # -- provisioning ---------------------------------------------------------------------

    def provision(self, request: ProvisionRequest) -> ClusterHandle:
        from skyk.provision.ssh_keys import user_key

        from skyk_gcp import errors, firewalls, images, instances, labels

        offering = request.offering
        region, zone = offering.region, offering.zone
        if not zone:
            raise ProvisionError("unsupported", "region", f"GCE places VMs in a zone; the offering"
                                 f" in {region} names none")
        key = user_key()
        names = [labels.instance_name(request.cluster, request.uid, r) for r in range(request.num_nodes)]
        tag = labels.firewall_name(request.cluster, request.uid) if request.ports else None
        # Everything that can be checked is, before anything is created.
        with _provision_errors(region, zone):
            image = images.resolve(request)
            bodies = [instances.instance(request, image, rank, f"{self.ssh_user}:{key.public}", tag)
                      for rank in range(request.num_nodes)]
        # From here on something may exist: any failure removes all the attempt made.
        try:
            with _provision_errors(region, zone):
                if tag:
                    firewalls.create(request.cluster, request.uid, request.ports)
                instances.insert(request, bodies)
                running = instances.wait_running(zone, names, RUNNING_TIMEOUT)
        except BaseException as exc:
            try:
                _remove(request.uid, zone, names, [tag] if tag else [])
            except Exception as cleanup:  # noqa: BLE001 - reported with the failure
                # Kept as unsettled (a timeout), so 'status -r' shows it and 'down' retries.
                why = cleanup.reason if isinstance(cleanup, ProvisionError) else errors.reason(cleanup)
                first = exc.reason if isinstance(exc, ProvisionError) else str(exc)
                raise ProvisionError("timeout", "region", f"{first}; then could not remove what"
                                     f" attempt {request.uid} made: {why}") from exc
            raise
        nodes = tuple(self._node(i, key, rank) for rank, i in enumerate(running))
        extra = {"instance_names": names, "firewall": tag, "image": image.link}
        return ClusterHandle.of(request, nodes, extra)

    def query(self, handle: ClusterHandle) -> list[NodeState]:
        from skyk_gcp import instances, operations

        with _user_errors(f"look up cluster {handle.cluster}'s instances", handle.region):
            names = _names(handle)
            found = [instances.get(handle.zone, name) for name in names]
            # A spot VM GCE took back is TERMINATED, or gone (deleted on preemption):
            # the zone's operations say whether GCE preempted it.
            suspects = [n for n, i in zip(names, found, strict=True)
                        if handle.use_spot and (i is None or i.status == "TERMINATED")]
            preempted = operations.preempted(handle.zone, suspects) if suspects else set()
            return [instances.node_state(i, handle.use_spot, n in preempted)
                    for n, i in zip(names, found, strict=True)]

    def stop(self, handle: ClusterHandle) -> None:
        from skyk_gcp import instances

        if handle.use_spot:
            raise SkykError(f"cluster {handle.cluster} runs on spot VMs, which skyk makes to be"
                            " deleted when preempted, so it cannot stop them",
                            hint=f"'skyk down {handle.cluster}' removes it")
        with _user_errors(f"stop cluster {handle.cluster}", handle.region):
            found = [(n, instances.get(handle.zone, n)) for n in _names(handle)]
            if not any(i for _, i in found):
                raise SkykError(f"cluster {handle.cluster} has no instances left in GCP",
                                hint=f"'skyk down {handle.cluster}' forgets it")
            running = [n for n, i in found if i is not None and i.status in instances.RUNNING]
            instances.act(handle.zone, running, "stop")

    def start(self, handle: ClusterHandle) -> ClusterHandle:
        from skyk.provision.ssh_keys import user_key

        from skyk_gcp import instances

        with _user_errors(f"start cluster {handle.cluster}", handle.region):
            names = _names(handle)
            found = [instances.get(handle.zone, n) for n in names]
            for node, instance in zip(handle.nodes, found, strict=True):
                if instance is None:
                    raise SkykError(f"node {node.node_id} of cluster {handle.cluster} is gone,"
                                    " so the cluster cannot start",
                                    hint=f"'skyk down {handle.cluster}', then launch it again")
            deadline = time.monotonic() + RUNNING_TIMEOUT
            stopping = [i.name for i in found if i.status in ("STOPPING", "SUSPENDING")]
            if stopping:
                _wait_stopped(handle.zone, stopping, deadline)
            stopped = [i.name for i in found if i.status not in instances.RUNNING]
            instances.act(handle.zone, stopped, "start")
            running = instances.wait_running(handle.zone, names, max(1.0, deadline - time.monotonic()))
        # External addresses change on every start: the nodes are described afresh.
        key = user_key()
        return dataclasses.replace(handle, nodes=tuple(self._node(i, key, rank)
                                                       for rank, i in enumerate(running)))

    def terminate(self, handle: ClusterHandle) -> None:
        with _user_errors(f"remove cluster {handle.cluster}", handle.region):
            firewall = handle.extra.get("firewall")
            _remove(handle.uid, handle.zone, _names(handle), [firewall] if firewall else [])

    def find_attempt(self, attempt: ProvisionAttempt) -> list[str]:
        from skyk_gcp import firewalls, instances

        with _user_errors(f"look up what launch attempt {attempt.uid} made", attempt.region):
            found = [f"instance {i.name} ({i.status})" for i in instances.find(attempt.uid)]
            return found + [f"firewall rule {f}" for f in firewalls.find(attempt.uid)]

    def remove_attempt(self, attempt: ProvisionAttempt) -> None:
        with _user_errors(f"remove what launch attempt {attempt.uid} made", attempt.region):
            _remove(attempt.uid, attempt.zone, [])

    def autostop_refusal(self, down: bool, use_spot: bool) -> str | None:
        # A VM powering itself off is TERMINATED (stopped) on GCE, whatever skyk sets:
        # deleting it needs GCP credentials on the node, which skyk never puts there.
        if down:
            return ("GCP cannot tear down nodes from inside (a GCE VM that powers itself off is"
                    " stopped, not deleted); 'skyk autostop NAME -i MINUTES' stops them instead")
        if use_spot:
            return "skyk makes GCP spot VMs to be deleted when preempted, so it cannot stop them"
        return None

    def _node(self, instance, key, rank: int):
        from skyk.provision.ssh_cloud import ssh_node

        from skyk_gcp import instances

        internal, external = instances.addresses(instance)
        return ssh_node(instance.name, internal, external, self.ssh_user, key, head=rank == 0)


def _names(handle: ClusterHandle) -> list[str]:
    """The instance names of the handle's nodes, head first."""
    return [n.node_id for n in handle.nodes]


def _wait_stopped(zone: str, names: list[str], deadline: float) -> None:
    """Poll until instances ``names`` are TERMINATED; raise a ``timeout`` error at ``deadline``."""
    from skyk_gcp import instances

    pause = instances.FIRST_POLL
    while True:
        states = [getattr(instances.get(zone, n), "status", "TERMINATED") for n in names]
        if all(s in ("TERMINATED", "SUSPENDED") for s in states):
            return
        if time.monotonic() + pause > deadline:
            raise ProvisionError("timeout", "zone", f"instance(s) {', '.join(names)} still stopping")
        time.sleep(pause)
        pause = min(pause * 1.5, instances.MAX_POLL)


def _remove(uid: str, zone: str | None, names: list[str], firewall_names: list[str] | None = None) -> None:
    """Delete attempt ``uid``'s instances (found by label in any zone, plus ``names`` in ``zone``)
    and then its firewall rules; succeeds if nothing is left. Boot disks go with their instances."""
    from skyk_gcp import firewalls, instances

    by_zone: dict[str, set[str]] = {}
    if zone:
        by_zone.setdefault(zone, set()).update(names)
    for instance in instances.find(uid):
        by_zone.setdefault(instances.zone_of(instance), set()).add(instance.name)
    for where, doomed in sorted(by_zone.items()):
        instances.act(where, sorted(doomed), "delete", allow_missing=True)
    firewalls.delete(sorted({*(firewall_names or ()), *firewalls.find(uid)}))


@contextlib.contextmanager
def _provision_errors(region: str, zone: str | None) -> Iterator[None]:
    """Turn Compute Engine's errors while provisioning into ``ProvisionError`` s failover acts on."""
    from skyk_gcp import errors

    try:
        yield
    except errors.api_errors() as exc:
        raise errors.classify(exc, region, zone) from exc
    except SkykError as exc:  # configuration found wanting (no project, a bad endpoint)
        raise ProvisionError("credentials", "cloud", exc.one_line()) from exc


@contextlib.contextmanager
def _user_errors(action: str, region: str) -> Iterator[None]:
    """Turn GCP's errors in a CLI verb into one-line ``SkykError`` s saying what could not be done."""
    from skyk_gcp import errors

    try:
        yield
    except (*errors.api_errors(), ProvisionError) as exc:
        raise errors.user_error(exc, action, region) from exc
