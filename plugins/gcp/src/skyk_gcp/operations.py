"""Waiting for Compute Engine operations, through the operations API of the endpoint in use.

Each mutating call answers an operation; it is awaited with
``zoneOperations.wait`` / ``globalOperations.wait`` on the same clients
(``ExtendedOperation.result()`` would poll Google's endpoint, ignoring an
override), and an operation that ends with an error raises
:class:`~skyk_gcp.errors.OperationError`.
"""

from __future__ import annotations

import time

from skyk.provision.types import ProvisionError

from skyk_gcp import errors, session

#: seconds one ``wait`` call may block at GCE (it answers within about two minutes)
WAIT_CALL = 150.0


def wait(operation, timeout: float, zone: str | None = None, check: bool = True):
    """Block until ``operation`` (a zonal one when ``zone``, else global) is DONE; return it.

    Raises :class:`~skyk_gcp.errors.OperationError` if it ended with an error
    (unless ``check`` is False), and a ``timeout`` error after ``timeout`` seconds.
    """
    from google.cloud import compute_v1

    done = compute_v1.Operation.Status.DONE
    deadline = time.monotonic() + timeout
    project = session.project()
    while operation.status != done:
        if time.monotonic() > deadline:
            raise ProvisionError("timeout", "region", f"GCE operation {operation.name}"
                                 f" ({operation.operation_type}) not done after {timeout:g}s")
        if zone:
            operation = errors.call(session.client("ZoneOperationsClient").wait, timeout=WAIT_CALL,
                                    project=project, zone=zone, operation=operation.name)
        else:
            operation = errors.call(session.client("GlobalOperationsClient").wait,
                                    timeout=WAIT_CALL, project=project, operation=operation.name)
    failure = errors.OperationError.of(operation) if check else None
    if failure is not None:
        raise failure
    return operation


def preempted(zone: str, names: list[str]) -> set[str]:
    """Which of the instances ``names`` in ``zone`` GCE preempted (its operations record it)."""
    from google.cloud import compute_v1

    request = compute_v1.ListZoneOperationsRequest(
        project=session.project(), zone=zone, filter='operationType = "compute.instances.preempted"')
    found = errors.call(session.client("ZoneOperationsClient").list, request=request)
    targets = {op.target_link.rstrip("/").rsplit("/", 1)[-1] for op in found}
    return targets & set(names)
