"""What an EC2 error means for failover, and the few retries worth making.

EC2 names every error with a code (``InsufficientInstanceCapacity``); the
codes, documented in the EC2 API reference ("Error codes for the Amazon EC2
API"), decide what failover stops trying: the zone (no capacity there), the
region (a quota, a region not enabled, an endpoint down) or the whole cloud
(credentials). Throttling and transient server errors get a few quick retries
in place first.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from botocore import exceptions as boto_errors
from skyk.errors import SkykError, printable
from skyk.provision.types import ProvisionError

#: Not enough of the instance type where it was asked for: another zone may have it.
CAPACITY = frozenset({
    "InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity", "InsufficientReservedInstancesCapacity",
    "InsufficientFreeAddressesInSubnet", "UnfulfillableCapacity", "SpotMaxPriceTooLow",
    # The instance type is not offered in this zone (for this account).
    "Unsupported",
})
#: Account limits, counted per region. MaxSpotInstanceCountExceeded is the spot
#: instance limit ("You've reached the limit on the number of Spot Instances"): a
#: quota, not capacity, so other zones of the region are no better.
QUOTA = frozenset({
    "VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded",
    "PendingVerification", "VolumeLimitExceeded", "MaxIOPSLimitExceeded",
    "SecurityGroupLimitExceeded", "ResourceLimitExceeded",
})
#: The region (or a subscription, e.g. an AMI's) must be enabled for the account first.
OPT_IN = frozenset({"OptInRequired"})
#: The credentials are wrong, expired or not allowed to use EC2 at all.
CREDENTIALS = frozenset({
    "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "ExpiredToken",
    "ExpiredTokenException", "RequestExpired", "SignatureDoesNotMatch",
    "MissingAuthenticationToken", "IncompleteSignature", "InvalidAccessKeyId",
    "UnrecognizedClientException", "AccessDenied", "AccessDeniedException", "Blocked",
})
#: Worth a few quick retries in place: throttling, and server errors that say
#: nothing about capacity (InsufficientInstanceCapacity is a 500 too, hence codes, not statuses).
TRANSIENT = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "EC2ThrottledException",
    "InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable",
})
#: Regions an account must enable before use. Until it does, EC2 there answers
#: AuthFailure as if the credentials were wrong: that blocks the region only.
OPT_IN_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-south-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-7", "ca-west-1", "eu-central-2", "eu-south-1", "eu-south-2",
    "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
})
#: botocore's errors for credentials it cannot find or load.
_CREDENTIAL_ERRORS = (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError,
                      boto_errors.CredentialRetrievalError, boto_errors.ProfileNotFound,
                      boto_errors.SSOError, boto_errors.TokenRetrievalError,
                      boto_errors.InvalidConfigError)
#: The answer was lost on the way (the request may have been carried out): retried,
#: as every call skyk makes is idempotent or tolerates its own repeat.
_LOST_ANSWERS = (boto_errors.ReadTimeoutError, boto_errors.ConnectionClosedError)

#: Most characters of a reason: EC2's messages can be long (encoded authorization messages).
REASON_LIMIT = 300
#: Tries of one call, and the first pause between them (tripled each time, with jitter).
TRIES = 3
BACKOFF = 0.25


def error_code(exc: BaseException) -> str | None:
    """Return EC2's error code of a ``ClientError``, or None for any other error."""
    if isinstance(exc, boto_errors.ClientError):
        return exc.response.get("Error", {}).get("Code") or "Unknown"
    return None


def reason(exc: BaseException) -> str:
    """One bounded line: EC2's code and message, or botocore's own description."""
    code = error_code(exc)
    if code is not None:
        message = exc.response.get("Error", {}).get("Message") or ""
        text = f"{code}: {message}" if message else code
    else:
        text = str(exc) or type(exc).__name__
    return printable(text, REASON_LIMIT)


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth trying the same call again at once."""
    return error_code(exc) in TRANSIENT or isinstance(exc, _LOST_ANSWERS)


def classify(exc: BaseException, region: str, zone: str | None = None) -> ProvisionError:
    """Turn an AWS error into the ``ProvisionError`` failover acts on.

    ``zone`` is the zone the request was for (its ID or name, for the reason).
    """
    code = error_code(exc)
    text = reason(exc)
    where = f"{region}/{zone}" if zone else region
    if code is None:
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return ProvisionError("credentials", "cloud", f"AWS credentials: {text}")
        if isinstance(exc, (boto_errors.ConnectionError, boto_errors.HTTPClientError)):
            return ProvisionError("outage", "region", f"EC2 in {region} unreachable: {text}")
        return ProvisionError("other", "region", text)
    if code in CAPACITY:
        return ProvisionError("capacity", "zone", f"{text} ({where})")
    if code in QUOTA:
        return ProvisionError("quota", "region", f"{text} ({region})")
    if code in OPT_IN:
        return ProvisionError("credentials", "region", f"{text} (is {region} enabled for this account?)")
    if code in CREDENTIALS:
        if code == "AuthFailure" and region in OPT_IN_REGIONS:
            return ProvisionError("credentials", "region",
                                  f"{text} ({region} is an opt-in region: is it enabled for this account?)")
        return ProvisionError("credentials", "cloud", text)
    if code in TRANSIENT:
        return ProvisionError("outage", "region", f"{text} ({region}, after {TRIES} tries)")
    if code.startswith("InvalidAMIID."):
        return ProvisionError("other", "region", f"image not usable in {region}: {text}")
    return ProvisionError("other", "region", f"{text} ({where})")


def call(method: Callable[..., Any], /, *, settled: Callable[[], Any] | None = None,
         **params: Any) -> Any:
    """Call a client method, retrying throttling and transient errors up to :data:`TRIES` times.

    ``settled``, asked before each retry, may say the first try did the work
    after all (an answer lost on the way): whatever it returns other than None
    is returned instead of calling again. Any other error is raised at once.
    """
    for attempt in range(TRIES):
        try:
            return method(**params)
        except (boto_errors.ClientError, boto_errors.BotoCoreError) as exc:
            if attempt + 1 >= TRIES or not retryable(exc):
                raise
        time.sleep(BACKOFF * 3**attempt * random.uniform(1.0, 1.5))
        if settled is not None and (done := settled()) is not None:
            return done
    raise AssertionError("unreachable")  # pragma: no cover


def user_error(exc: BaseException, action: str, region: str) -> SkykError:
    """The one-line error a CLI verb (stop, start, down, status -r) shows for ``exc``."""
    error = exc if isinstance(exc, ProvisionError) else classify(exc, region)
    hints = {
        "credentials": "check the credentials with 'aws sts get-caller-identity' (or run 'aws configure')",
        "capacity": "AWS has no spare capacity for it there now; try again later",
        "outage": "EC2's endpoint did not answer; try again, or check AWS's health dashboard",
    }
    return SkykError(f"AWS could not {action}: {error.reason}", hint=hints.get(error.kind))


# -- S3 --------------------------------------------------------------------------------------

#: S3 answers HEAD requests without a body, so only the HTTP status names the error.
_S3_STATUS_CODES = {"301": "PermanentRedirect", "403": "AccessDenied", "404": "NoSuchBucket"}
#: S3's codes for credentials it does not accept (as opposed to a refusal by policy).
_S3_BAD_CREDENTIALS = CREDENTIALS - {"AccessDenied", "AccessDeniedException"}
_CHECK_CREDENTIALS = "check the credentials with 'aws sts get-caller-identity' (or run 'aws configure')"


def store_error(exc: BaseException, bucket: str, action: str):
    """The one-line ``StoreError`` for an error S3 (or botocore) raised while doing ``action`` on ``bucket``.

    Its ``code`` is S3's error code (``NoSuchBucket``, ``AccessDenied``,
    ``BucketAlreadyExists``, ``InvalidAccessKeyId``...); a HEAD request's bare
    status is named by the code S3 gives the same error elsewhere.
    """
    from skyk.storage.store import StoreError

    code = error_code(exc)
    if code is None:
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return StoreError(f"S3 could not {action} {bucket}: AWS credentials: {reason(exc)}",
                              code="NoCredentials", hint=_CHECK_CREDENTIALS)
        return StoreError(f"S3 could not {action} {bucket}: {reason(exc)}", code=type(exc).__name__,
                          hint="check the network path to S3's endpoint (AWS_ENDPOINT_URL_S3 if set)")
    code = _S3_STATUS_CODES.get(code, code)
    message = printable(exc.response.get("Error", {}).get("Message") or "", REASON_LIMIT)
    text = f"S3 could not {action} {bucket}: {code}" + (f": {message}" if message else "")
    if code == "NoSuchBucket":
        hint = f"no bucket {bucket} exists (bucket names are global: check the spelling)"
    elif code in ("AccessDenied", "AllAccessDisabled"):
        hint = (f"the AWS credentials are wrong or may not use bucket {bucket}: check them with"
                " 'aws sts get-caller-identity', and grant them s3:ListBucket, s3:GetObject and"
                " s3:PutObject on it")
    elif code == "BucketAlreadyExists":
        hint = "S3 bucket names are global across all AWS accounts: choose another name"
    elif code == "BucketAlreadyOwnedByYou":
        hint = f"use s3://{bucket} as a source instead of creating it"
    elif code in _S3_BAD_CREDENTIALS:
        hint = _CHECK_CREDENTIALS
    elif code == "PermanentRedirect":
        hint = "the bucket is in another region than the one asked for"
    else:
        hint = None
    return StoreError(text, code=code, hint=hint)
