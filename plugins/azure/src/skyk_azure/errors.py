"""What an ARM error means for failover, and the few retries worth making.

ARM names every error with a code in its JSON body (``{"error": {"code":
"SkuNotAvailable", ...}}``); a VM that cannot be placed reports it as the
failed outcome of its long-running operation (``AllocationFailed``). The
codes decide what failover stops trying: the zone (no capacity in it), the
region (no capacity, a quota, the size not offered, an endpoint down) or the
whole cloud (credentials, the subscription). Throttling, server errors and a
resource group still being deleted get a few retries in place first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from azure.core import exceptions as azure_errors
from skyk.errors import SkykError, printable
from skyk.provision.types import ProvisionError

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
