"""Provision a cluster at the best place that works, moving on when a place fails.

Candidates come ranked from the optimizer. A failure blocks the zone, region
or whole cloud it names, and the next candidate that is not blocked is tried
(re-optimising over what is left). Each attempt has a time limit, so one
hanging region cannot stall the search; with ``retry_until_up`` the whole
search starts over with exponential backoff until something works.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from skyk.envvars import seconds
from skyk.errors import SkykError
from skyk.optimizer.planner import PlannedTask
from skyk.optimizer.ranking import Candidate, Location, is_blocked
from skyk.provision.cloud import Cloud
from skyk.provision.types import ClusterHandle, ProvisionAttempt, ProvisionError, ProvisionRequest

#: Seconds one attempt (one zone or region) may take before it is abandoned.
TIMEOUT_ENV = "SKYK_PROVISION_TIMEOUT"
DEFAULT_TIMEOUT = 900.0
#: First wait between rounds of ``--retry-until-up``; doubles up to MAX_BACKOFF.
BACKOFF_ENV = "SKYK_RETRY_BACKOFF"
DEFAULT_BACKOFF = 5.0
MAX_BACKOFF = 300.0
#: seconds between "still provisioning" lines
HEARTBEAT = 10.0


@dataclass(frozen=True)
class Attempt:
    """One place provisioning was tried, and why it failed."""

    infra: str
    instance_type: str
    kind: str
    reason: str
    #: what the failure ruled out: ``cloud/region[/zone]``
    blocked: str = ""

    def __str__(self) -> str:
        return f"{self.infra} ({self.instance_type}): {self.kind}: {self.reason}"


class ProvisionFailed(SkykError):
    """Every feasible place failed; the message lists each attempt."""

    exit_code = 3

    def __init__(self, cluster: str, attempts: list[Attempt]):
        listed = "; ".join(f"[{i}] {a}" for i, a in enumerate(attempts, 1))
        super().__init__(f"could not provision cluster {cluster} after {len(attempts)} attempt(s): {listed}",
                         hint="add --retry-until-up to keep trying, or relax the resources"
                              " (other accelerators, regions or clouds)")
        self.attempts = attempts
        self.table = attempts_table(attempts)


def attempts_table(attempts: list[Attempt]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The failed attempts as a table: where, what failed, what it ruled out and why."""
    from skyk.errors import printable

    return (("#", "INFRA", "INSTANCE_TYPE", "FAILURE", "BLOCKED", "REASON"),
            [(str(i), a.infra, a.instance_type, a.kind, a.blocked or "-", printable(a.reason, 200))
             for i, a in enumerate(attempts, 1)])


def blocked_location(candidate: Candidate, error: ProvisionError) -> Location:
    """Return what a failure rules out: the zone, the region or the whole cloud.

    No capacity rules out only the instance type that lacked it: another type
    in the same zone is other hardware (an L4 shortage says nothing of A100s).
    Every other failure (quota, outage, credentials) rules out the place.
    """
    offering = candidate.offering
    kind = offering.instance_type if error.kind == "capacity" else None
    if error.scope == "cloud":
        return (offering.cloud, None, None, kind)
    if error.scope == "region" or offering.zone is None:
        return (offering.cloud, offering.region, None, kind)
    return (offering.cloud, offering.region, offering.zone, kind)


def describe_location(scope: str, location: Location) -> str:
    """``zone gcp/us-east4/us-east4-a`` (with ``g2-standard-96 in`` before it for one type)."""
    cloud, region, zone, kind = location
    where = f"{scope} {'/'.join(p for p in (cloud, region, zone) if p)}"
    return f"{kind} in {where}" if kind else where


def _attempt(cloud: Cloud, request: ProvisionRequest, timeout: float,
             on_handle: Callable[[ClusterHandle], None],
             progress: Callable[[str], None],
             on_settled: Callable[[], None] = lambda: None) -> ClusterHandle:
    """Provision and wait for the nodes in a thread, giving up after ``timeout``.

    ``on_handle`` sees the nodes as soon as they exist, before they are
    ready, so a launch killed while waiting still leaves a record to clean up.

    A plugin call cannot be interrupted, so on timeout the thread is left to
    finish and whatever it made is terminated as soon as it returns.
    """
    outcome: dict[str, object] = {}
    abandoned = threading.Event()

    def work() -> None:
        try:
            handle = cloud.provision(request)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
            return
        if abandoned.is_set():
            _terminate_quietly(cloud, handle)
            return
        outcome["handle"] = handle
        try:
            on_handle(handle)
            cloud.wait_ready(handle, timeout)
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=work, name=f"provision-{request.uid}", daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        # Join in slices so a long attempt (real clouds take minutes) shows signs of life.
        while thread.is_alive() and (waited := time.monotonic() - started) < timeout:
            thread.join(min(HEARTBEAT, timeout - waited))
            if thread.is_alive() and time.monotonic() - started < timeout:
                progress(f"  still provisioning ({time.monotonic() - started:.0f}s)")
    except KeyboardInterrupt:
        # Give a quick plugin call a moment to return, so what it made is removed.
        abandoned.set()
        thread.join(5)
        if "handle" in outcome:
            _terminate_quietly(cloud, outcome["handle"])
        if not thread.is_alive():
            on_settled()  # the plugin call returned and what it made is gone
        raise
    if thread.is_alive():
        abandoned.set()
        if "handle" in outcome:
            _terminate_quietly(cloud, outcome["handle"])
        raise ProvisionError("timeout", "region", f"no answer after {timeout:g}s")
    error = outcome.get("error")
    if error is not None:
        if "handle" in outcome:
            _terminate_quietly(cloud, outcome["handle"])
        if isinstance(error, ProvisionError):
            raise error
        if isinstance(error, Exception):
            # A plugin bug is not a reason to stop searching other clouds.
            raise ProvisionError("other", "cloud", f"{type(error).__name__}: {error}") from error
        raise error
    return outcome["handle"]  # type: ignore[return-value]


def _terminate_quietly(cloud: Cloud, handle: ClusterHandle) -> None:
    try:
        cloud.terminate(handle)
    except Exception:  # noqa: BLE001 - best effort while already failing
        pass


def _check_credentials(cloud: Cloud, checked: dict[str, object]) -> None:
    """Fail a cloud without credentials at once, without asking it to provision."""
    if cloud.name not in checked:
        checked[cloud.name] = cloud.check_credentials()
    result = checked[cloud.name]
    if not result.ok:
        raise ProvisionError("credentials", "cloud", result.reason + (f" ({result.hint})" if result.hint else ""))


def provision_with_failover(planned: PlannedTask, cluster: str, *, retry_until_up: bool = False,
                            progress: Callable[[str], None] = lambda _: None,
                            on_handle: Callable[[ClusterHandle], None] = lambda _: None,
                            on_attempt: Callable[[ProvisionAttempt], None] = lambda _: None,
                            on_settled: Callable[[ProvisionAttempt], None] = lambda _: None,
                            ) -> ClusterHandle:
    """Provision ``planned``'s task as ``cluster`` at the best place that works.

    ``progress`` receives one line per step; ``on_handle`` is called as soon
    as an attempt has made nodes (so a caller can record them at once).
    ``on_attempt`` is called before each cloud is asked for nodes, so a
    caller can record the attempt and find what it made if this process
    dies; ``on_settled`` when a failed attempt is known to have left nothing
    (an attempt that timed out may still be making nodes: it is not settled).
    """
    task = planned.task
    clouds = planned.kernel.clouds()
    timeout = seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT)
    backoff = seconds(BACKOFF_ENV, DEFAULT_BACKOFF)
    ports = tuple(p for low, high in task.resources.ports or () for p in range(low, high + 1))
    attempts: list[Attempt] = []
    credentials: dict[str, object] = {}
    rounds = 1
    while True:
        blocked: set[Location] = set()
        for candidate in planned.plan.candidates:
            if is_blocked(candidate.offering, blocked):
                continue
            offering = candidate.offering
            image = task.resources.image_id
            if isinstance(image, dict):  # per-region images
                image = image.get(offering.region)
            request = ProvisionRequest(cluster=cluster, uid=secrets.token_hex(4), num_nodes=task.num_nodes,
                                       offering=offering, use_spot=candidate.use_spot, ports=ports,
                                       disk_size=task.resources.disk_size, image_id=image,
                                       disk_tier=task.resources.disk_tier)
            nodes = f"{task.num_nodes}x " if task.num_nodes > 1 else ""
            progress(f"Provisioning {nodes}{offering.instance_type}{' [spot]' if candidate.use_spot else ''}"
                     f" on {offering.infra} (${candidate.hourly_cost:.2f}/h)")
            attempt = ProvisionAttempt.of(request)
            try:
                _check_credentials(clouds[offering.cloud], credentials)
                on_attempt(attempt)
                handle = _attempt(clouds[offering.cloud], request, timeout, on_handle, progress,
                                  functools.partial(on_settled, attempt))
                if attempts:
                    from skyk.cli.output import format_table

                    progress(f"Provisioned on {offering.infra} after {len(attempts)} failed attempt(s):")
                    for line in format_table(*attempts_table(attempts)):
                        progress(f"  {line}")
                return handle
            except ProvisionError as error:
                if error.kind != "timeout":
                    on_settled(attempt)
                location = blocked_location(candidate, error)
                where = describe_location(error.scope, location)
                attempts.append(Attempt(offering.infra, offering.instance_type, error.kind, error.reason, where))
                blocked.add(location)
                progress(f"  failed ({error.kind}: {error.reason}); blocking {where}")
        if not retry_until_up:
            raise ProvisionFailed(cluster, attempts)
        progress(f"All {len(blocked)} places failed in round {rounds}; retrying in {backoff:g}s"
                 " (--retry-until-up; Ctrl-C to stop)")
        time.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
        rounds += 1
