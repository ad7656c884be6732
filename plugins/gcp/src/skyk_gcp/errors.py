"""What a Compute Engine error means for failover, and the few retries worth making.

GCE fails in two ways. A request it refuses answers an HTTP error whose JSON
names a ``reason`` (``forbidden``, ``notFound``, ``rateLimitExceeded``...),
which the client raises as a ``GoogleAPICallError``. A request it accepts
answers an operation, and a failure found while carrying it out (no capacity,
a quota) ends that operation ``DONE`` with ``error.errors[].code``
(``ZONE_RESOURCE_POOL_EXHAUSTED``, ``QUOTA_EXCEEDED``...), which
:class:`OperationError` carries. Both decide what failover stops trying: the
zone (no capacity there), the region (a regional quota, an endpoint down) or
the whole cloud (credentials, a project-wide quota).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

from skyk.errors import SkykError, printable
from skyk.provision.types import ProvisionError

#: Operation codes: no capacity for the request in the zone; another zone may have it.
CAPACITY = frozenset({"ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                      "RESOURCE_POOL_EXHAUSTED"})
QUOTA = frozenset({"QUOTA_EXCEEDED", "quotaExceeded"})
#: HTTP error reasons of credentials that are wrong, or not allowed to use Compute Engine.
CREDENTIALS = frozenset({"required", "authError", "forbidden", "accessNotConfigured",
                         "SERVICE_DISABLED", "insufficientPermissions", "unauthorized"})
#: Worth a few quick retries in place: throttling and transient server errors.
TRANSIENT = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "backendError",
                       "internalError", "RESOURCE_OPERATION_RATE_EXCEEDED"})
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_REQUEST_PREFIX = re.compile(r"^[A-Z]+ \S+: ")

#: What to do when Google refuses the credentials (Compute Engine and Cloud Storage alike).
CREDENTIALS_HINT = ("check the credentials with 'gcloud auth application-default print-access-token'"
                    " (or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key)")

#: Most characters of a reason.
REASON_LIMIT = 300
#: Tries of one call, and the first pause between them (tripled each time, with jitter).
TRIES = 3
BACKOFF = 0.25


class OperationError(Exception):
    """A GCE operation ended DONE with an error: its first code, message and quota metric."""

    def __init__(self, code: str, message: str, quota_metric: str | None = None,
                 region: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.quota_metric = quota_metric
        #: the region of a regional quota (its ``dimensions``), when GCE says
        self.region = region

    @classmethod
    def of(cls, operation) -> OperationError | None:
        """The error a DONE ``compute_v1.Operation`` ended with, or None if it succeeded."""
        errors = list(operation.error.errors) if operation.error else []
        if not errors:
            return None
        first = errors[0]
        metric = region = None
        for detail in first.error_details:
            if detail.quota_info and detail.quota_info.metric_name:
                metric = detail.quota_info.metric_name.rsplit("/", 1)[-1].upper()
                region = dict(detail.quota_info.dimensions).get("region")
        return cls(first.code or "UNKNOWN", first.message or "", metric, region)

    @property
    def project_wide(self) -> bool:
        """Whether a quota error is about a quota of the whole project (no region helps)."""
        return bool(self.quota_metric and self.quota_metric.endswith("_ALL_REGIONS")) \
            or "globally" in self.message


def http_reason(exc: BaseException) -> str | None:
    """The ``reason`` of a GCE HTTP error (``notFound``...), or None for any other error."""
    from google.api_core import exceptions as api

    if not isinstance(exc, api.GoogleAPICallError):
        return None
    for error in exc.errors or ():
        if isinstance(error, dict) and error.get("reason"):
            return error["reason"]
    return getattr(exc, "reason", None) or type(exc).__name__


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a GCE HTTP error, or None."""
    from google.api_core import exceptions as api

    return int(exc.code) if isinstance(exc, api.GoogleAPICallError) and exc.code else None


def reason(exc: BaseException) -> str:
    """One bounded line: GCE's code (or reason) and message, or the library's description."""
    if isinstance(exc, OperationError):
        text = str(exc)
    elif http_status(exc) is not None:
        # The client puts the request ("GET https://...: ") before GCE's message.
        message = _REQUEST_PREFIX.sub("", exc.message or "")  # type: ignore[attr-defined]
        text = f"{http_reason(exc)}: {message}"
    else:
        text = str(exc) or type(exc).__name__
    return printable(" ".join(text.split()), REASON_LIMIT)


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth trying the same call again at once."""
    if isinstance(exc, OperationError):
        return False
    return http_reason(exc) in TRANSIENT or http_status(exc) in _TRANSIENT_STATUS


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is GCE's 404."""
    return http_status(exc) == 404


def _transport_errors() -> tuple[type[BaseException], ...]:
    import google.auth.exceptions
    import requests

    return (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            google.auth.exceptions.TransportError)


def api_errors() -> tuple[type[BaseException], ...]:
    """Every error a Compute call may raise that :func:`classify` understands."""
    import google.auth.exceptions
    from google.api_core import exceptions as api

    return (api.GoogleAPICallError, OperationError, google.auth.exceptions.GoogleAuthError,
            *_transport_errors())


def classify(exc: BaseException, region: str, zone: str | None = None) -> ProvisionError:
    """Turn a Compute Engine error into the ``ProvisionError`` failover acts on."""
    import google.auth.exceptions

    text = reason(exc)
    where = f"{region}/{zone}" if zone else region
    if isinstance(exc, OperationError):
        if exc.code in CAPACITY:
            return ProvisionError("capacity", "zone", f"{text} ({where})")
        if exc.code in QUOTA:
            if exc.project_wide:
                return ProvisionError("quota", "cloud", f"{text} (a project-wide quota: no region"
                                      " of GCP can take it)")
            return ProvisionError("quota", "region", f"{text} ({region})")
        if exc.code in TRANSIENT:
            return ProvisionError("outage", "region", f"{text} ({where})")
        return ProvisionError("other", "zone" if zone else "region", f"{text} ({where})")
    if isinstance(exc, _transport_errors()):
        return ProvisionError("outage", "region", f"Compute Engine unreachable for {region}: {text}")
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return ProvisionError("credentials", "cloud", f"GCP credentials: {text}")
    code = http_reason(exc)
    status = http_status(exc)
    if code in QUOTA:
        return ProvisionError("quota", "region", f"{text} ({region})")
    if code in TRANSIENT or status in _TRANSIENT_STATUS:
        return ProvisionError("outage", "region", f"{text} ({region}, after {TRIES} tries)")
    if code in CREDENTIALS or status in (401, 403):
        return ProvisionError("credentials", "cloud", text)
    if status == 404 and zone:
        return ProvisionError("unsupported", "zone", f"{text} ({where})")
    return ProvisionError("other", "region", f"{text} ({where})")


def call(method: Callable[..., Any], /, *, timeout: float = 30.0, **params: Any) -> Any:
    """Call a client method, retrying throttling and transient errors up to :data:`TRIES` times.

    Inserts carry a ``requestId``, so a retry after a lost answer never makes a
    second resource; every other call skyk makes is idempotent. The client's own
    retries are off (``retry=None``): its defaults retry a 503 on reads for up to
    ten minutes, which would hide an outage from failover.
    """
    from google.api_core import exceptions as api

    for attempt in range(TRIES):
        try:
            return method(**params, retry=None, timeout=timeout)
        except api.GoogleAPICallError as exc:
            if attempt + 1 >= TRIES or not retryable(exc):
                raise
        time.sleep(BACKOFF * 3**attempt * random.uniform(1.0, 1.5))
    raise AssertionError("unreachable")  # pragma: no cover


def user_error(exc: BaseException, action: str, region: str) -> SkykError:
    """The one-line error a CLI verb (stop, start, down, status -r) shows for ``exc``."""
    error = exc if isinstance(exc, ProvisionError) else classify(exc, region)
    hints = {
        "credentials": CREDENTIALS_HINT,
        "capacity": "GCP has no spare capacity for it there now; try again later",
        "outage": "Compute Engine's endpoint did not answer; try again, or check GCP's status page",
    }
    return SkykError(f"GCP could not {action}: {error.reason}", hint=hints.get(error.kind))
