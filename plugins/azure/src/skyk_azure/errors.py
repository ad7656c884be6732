"""What an ARM error means for failover, and the few retries worth making.

ARM names every error with a code in its JSON body (``{"error": {"code":
"SkuNotAvailable", ...}}``); a VM that cannot be placed reports it as the
failed outcome of its long-running operation (``AllocationFailed``). The
codes decide what failover stops trying: the zone (no capacity in it), the
region (no capacity, a quota, the size not offered, an endpoint down) or the
whole cloud (credentials, the subscription). Throttling, server errors and a
resource group still being deleted get a few retries in place first.

Blob storage names its errors the same way, in the ``x-ms-error-code``
header (``ContainerNotFound``, ``AuthenticationFailed``); :func:`store_error`
turns them into the one-line :class:`~skyk.storage.store.StoreError` a
bucket verb raises.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from azure.core import exceptions as azure_errors
from skyk.errors import SkykError, printable
from skyk.provision.types import ProvisionError
from skyk.storage.store import StoreError

#: No capacity for the VM size in the zone asked for: another zone may have it.
ZONAL_CAPACITY = frozenset({"ZonalAllocationFailed", "OverconstrainedZonalAllocationRequest"})
#: No capacity for the VM size in the region (or for its constraints there).
CAPACITY = frozenset({"AllocationFailed", "OverconstrainedAllocationRequest", "SpotAllocationFailed"})
#: The VM size (or spot for it) is not offered to this subscription in the region.
NOT_OFFERED = frozenset({"SkuNotAvailable"})
#: Subscription limits, counted per region (cores quota, public IPs, ...).
QUOTA = frozenset({"OperationNotAllowed", "QuotaExceeded"})
#: The credentials are wrong, expired or not allowed; the subscription is unknown or disabled.
CREDENTIALS = frozenset({
    "AuthorizationFailed", "LinkedAuthorizationFailed", "InvalidAuthenticationToken",
    "InvalidAuthenticationTokenTenant", "AuthenticationFailed", "ExpiredAuthenticationToken",
    "SubscriptionNotFound", "InvalidSubscriptionId", "ReadOnlyDisabledSubscription",
    "DisallowedOperation", "SubscriptionNotRegistered", "MissingSubscriptionRegistration",
})
#: Worth retrying in place: the group of the same name is still going, throttling, server trouble.
TRANSIENT = frozenset({
    "ResourceGroupBeingDeleted", "TooManyRequests", "RetryableError", "InternalServerError",
    "ServiceUnavailable", "GatewayTimeout", "InternalExecutionError",
})

#: What each group of codes means: (codes, kind, the scope failover blocks).
_MEANINGS = ((ZONAL_CAPACITY, "capacity", "zone"), (CAPACITY, "capacity", "region"),
             (NOT_OFFERED, "capacity", "region"), (QUOTA, "quota", "region"))

#: Most characters of a reason: ARM's messages can be long (lists of allowed sizes).
REASON_LIMIT = 300
#: Tries of one call; the first pause between them (doubled, with jitter), and the
#: longest pause, whatever ``Retry-After`` asks (a hidden minute-long wait is a hang).
TRIES = 4
BACKOFF = 0.5
MAX_PAUSE = 10.0


def error_code(exc: BaseException) -> str | None:
    """Return ARM's error code of ``exc``, or None when it carries none."""
    if isinstance(exc, azure_errors.HttpResponseError):
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None)
        if code:
            return code
        status = getattr(exc, "status_code", None)
        return "TooManyRequests" if status == 429 else None
    return None


def reason(exc: BaseException) -> str:
    """One bounded line: ARM's code and message, or azure-core's own description."""
    code = error_code(exc)
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    if code and message:
        text = f"{code}: {message}"
    elif code:
        text = code
    else:
        text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return printable(" ".join(str(text).split()), REASON_LIMIT)


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth trying the same call again."""
    if isinstance(exc, azure_errors.ServiceResponseError):  # the answer was lost on the way
        return True
    if isinstance(exc, azure_errors.HttpResponseError):
        status = getattr(exc, "status_code", None) or 0
        code = error_code(exc)
        if code in CAPACITY | ZONAL_CAPACITY | QUOTA | NOT_OFFERED | CREDENTIALS:
            return False
        return code in TRANSIENT or status == 429 or status >= 500
    return False


def classify(exc: BaseException, region: str, zone: str | None = None) -> ProvisionError:
    """Turn an Azure error into the ``ProvisionError`` failover acts on.

    ``zone`` is the zone the VMs were asked for, if any.
    """
    if isinstance(exc, ProvisionError):
        return exc
    code = error_code(exc)
    text = reason(exc)
    where = f"{region}/{zone}" if zone else region
    if isinstance(exc, azure_errors.ClientAuthenticationError) or code in CREDENTIALS:
        return ProvisionError("credentials", "cloud", f"Azure credentials: {text}")
    for codes, kind, scope in _MEANINGS:
        if code in codes:
            # A zonal failure blocks the zone, when the VMs were asked for one.
            scope = "zone" if scope == "zone" and zone else "region"
            return ProvisionError(kind, scope, f"{text} ({where if zone else region})")
    if isinstance(exc, azure_errors.ServiceRequestError):  # refused, no route, TLS
        return ProvisionError("outage", "region", f"Azure Resource Manager unreachable: {text}")
    if retryable(exc):
        return ProvisionError("outage", "region", f"{text} ({region}, after {TRIES} tries)")
    return ProvisionError("other", "region", f"{text} ({where})")


def _pause(exc: BaseException, attempt: int) -> float:
    """Seconds to wait before the next try: ARM's ``Retry-After`` if it gave one, capped."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        asked = float(headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        asked = BACKOFF * 2**attempt * random.uniform(1.0, 1.5)
    return max(0.0, min(asked, MAX_PAUSE))


def call(method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call an SDK method, retrying transient errors up to :data:`TRIES` times.

    Every call skyk makes is idempotent (PUTs of named resources, GETs,
    DELETEs), so a repeat after a lost answer does no harm. Any other error is
    raised at once.
    """
    for attempt in range(TRIES):
        try:
            return method(*args, **kwargs)
        except (azure_errors.HttpResponseError, azure_errors.ServiceResponseError) as exc:
            if attempt + 1 >= TRIES or not retryable(exc):
                raise
            time.sleep(_pause(exc, attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def user_error(exc: BaseException, action: str, region: str) -> SkykError:
    """The one-line error a CLI verb (stop, start, down, status -r) shows for ``exc``."""
    error = classify(exc, region)
    hints = {
        "credentials": "check the credentials with 'az account show' (or the AZURE_* variables)",
        "capacity": "Azure has no spare capacity for it there now; try again later",
        "quota": "ask for more quota in the Azure portal (Subscriptions > Usage + quotas)",
        "outage": "Azure Resource Manager did not answer; try again, or check Azure's status page",
    }
    return SkykError(f"Azure could not {action}: {error.reason}", hint=hints.get(error.kind))


# ---------------------------------------------------------------------- Blob storage

#: Blob storage's codes for a key or signature it refuses, or a caller it does not allow.
STORAGE_DENIED = frozenset({
    "AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
    "AuthorizationProtocolMismatch", "AuthorizationResourceTypeMismatch",
    "AuthorizationSourceIPMismatch", "InsufficientAccountPermissions", "AccountIsDisabled",
})
#: What to do about a storage error code.
_STORAGE_HINTS = {
    "ContainerNotFound": "check the container's name and the storage account; skyk creates"
                         " a container only for a storage object with a name and a local source",
    "BlobNotFound": "check the object's name (list the container with 'az storage blob list')",
    "ContainerAlreadyExists": "the storage account already has a container of that name:"
                              " use it through its URL, or choose another name",
    "ContainerBeingDeleted": "Azure is still deleting a container of that name; try again in"
                             " a minute, or choose another name",
    "InvalidResourceName": "container names are 3 to 63 lowercase letters, digits and single"
                           " hyphens, starting and ending with a letter or digit",
    "AccountIsDisabled": "the storage account is disabled; enable it in the Azure portal",
}
_DENIED_HINT = ("check the storage account's key (AZURE_STORAGE_KEY, or AccountKey in"
                " AZURE_STORAGE_CONNECTION_STRING) and that the account allows this network")


def storage_code(exc: BaseException) -> str:
    """Blob storage's error code of ``exc`` (``x-ms-error-code``), or ``""``."""
    code = getattr(exc, "error_code", None) or error_code(exc)
    if code:
        return str(getattr(code, "value", code))
    status = getattr(exc, "status_code", None)
    return {403: "AuthenticationFailed", 404: "ResourceNotFound"}.get(status, "")


def store_error(exc: BaseException, what: str) -> StoreError:
    """Turn an azure-storage-blob error about ``what`` (a container or object) into a ``StoreError``."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, azure_errors.ServiceRequestError):  # refused, no route, TLS, DNS
        return StoreError(f"Azure Blob storage unreachable for {what}: {_first_line(exc)}",
                          code="ServiceRequestError",
                          hint="check the Blob endpoint (AZURE_STORAGE_CONNECTION_STRING's"
                               " BlobEndpoint, or the account name) and the network")
    code = storage_code(exc)
    if code in STORAGE_DENIED or isinstance(exc, azure_errors.ClientAuthenticationError):
        hint = _STORAGE_HINTS.get(code, _DENIED_HINT)
    else:
        hint = _STORAGE_HINTS.get(code)
    text = f"{code}: {_first_line(exc)}" if code else _first_line(exc)
    return StoreError(printable(f"Azure Blob {what}: {text}", REASON_LIMIT), code=code, hint=hint)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Raise what the block's azure-storage-blob calls fail with as a ``StoreError`` about ``what``."""
    try:
        yield
    except azure_errors.AzureError as exc:
        raise store_error(exc, what) from exc


def _first_line(exc: BaseException) -> str:
    # Storage messages go on with RequestId, Time and the whole XML body on later lines.
    text = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip()
    return printable(text.splitlines()[0] if text else type(exc).__name__, REASON_LIMIT)
