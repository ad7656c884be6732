"""Faults by rule, answered the way EC2 answers errors.

A :class:`Rule` says which EC2 requests fail (action, region, zone, instance
type, spot or on-demand) and how often; :func:`error_response` renders EC2's
error document for a code with the HTTP status EC2 sends for it. The fake
EC2 server (:mod:`fakecloud.ec2`) consults its rules before it forwards a
request to moto, so a test makes any call fail without moto knowing.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from xml.sax.saxutils import escape

__all__ = ["Rule", "RequestFacts", "error_response", "status_for"]

# HTTP statuses of the EC2 error codes a test is likely to inject. EC2 sends
# client errors with 4xx and server-side trouble with 5xx: capacity shortages
# and internal errors are 500, throttling and outages 503, credential and
# account problems 401 (AuthFailure, OptInRequired), missing IAM permission
# 403, a successful dry run 412. Every other code is a client error: 400.
_STATUS = {
    "AuthFailure": 401,
    "OptInRequired": 401,
    "UnauthorizedOperation": 403,
    "Blocked": 403,
    "DryRunOperation": 412,
    "InternalError": 500,
    "InternalFailure": 500,
    "InsufficientInstanceCapacity": 500,
    "InsufficientHostCapacity": 500,
    "InsufficientCapacity": 500,
    "InsufficientAddressCapacity": 500,
    "InsufficientReservedInstanceCapacity": 500,
    "InsufficientVolumeCapacity": 500,
    "RequestLimitExceeded": 503,
    "Unavailable": 503,
    "ServiceUnavailable": 503,
}

# Messages in the spirit of EC2's own, for codes injected without one.
_MESSAGES = {
    "AuthFailure": "The access credentials could not be validated.",
    "OptInRequired": "The account is not subscribed to this service in this region.",
    "UnauthorizedOperation": "You are not authorized to perform this operation.",
    "Blocked": "This account is blocked.",
    "InternalError": "An internal error has occurred.",
    "InsufficientInstanceCapacity":
        "There is not enough capacity for the requested instance type in this Availability Zone.",
    "InsufficientHostCapacity": "There is not enough Dedicated Host capacity.",
    "InsufficientCapacity": "There is not enough capacity to fulfil the request.",
    "InsufficientAddressCapacity": "There are not enough addresses to fulfil the request.",
    "VcpuLimitExceeded": "The request would exceed the vCPU limit of this account.",
    "InstanceLimitExceeded": "The request would exceed the instance limit of this account.",
    "MaxSpotInstanceCountExceeded": "The request would exceed the Spot Instance limit.",
    "SpotMaxPriceTooLow": "The maximum Spot price is below the current Spot price.",
    "RequestLimitExceeded": "Request limit exceeded.",
    "Unavailable": "The service is unavailable. Try again later.",
    "ServiceUnavailable": "The service is unavailable. Try again later.",
    "Unsupported": "The requested configuration is not supported in this Availability Zone.",
}


def status_for(code: str) -> int:
    """Return the HTTP status EC2 sends with error ``code`` (400 for codes not listed)."""
    return _STATUS.get(code, 500 if code.startswith("Server.") else 400)


def error_response(code: str, message: str | None = None,
                   request_id: str | None = None) -> tuple[int, bytes]:
    """Return ``(status, body)``: EC2's error document for ``code``.

    The body is ``<Response><Errors><Error><Code/><Message/></Error></Errors>
    <RequestID/></Response>``, the shape botocore's EC2 parser reads into a
    ``ClientError``; ``message`` defaults to a generic one for the code.
    """
    text = message if message is not None else _MESSAGES.get(code, f"{code}.")
    request_id = request_id or str(uuid.uuid4())
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{escape(code)}</Code>"
            f"<Message>{escape(text)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>")
    return status_for(code), body.encode()


@dataclass(frozen=True)
class RequestFacts:
    """What a rule can match in one EC2 request; None where the request does not say."""

    action: str | None
    region: str | None
    zone: str | None = None
    instance_type: str | None = None
    spot: bool = False


class Rule:
    """One injected fault: requests it matches fail with ``code`` while ``times`` lasts.

    Every criterion left None matches anything. ``zone`` matches only requests
    that name a zone (``Placement.AvailabilityZone``, or a subnet in it).
    ``times`` None answers every matching request; otherwise the rule answers
    that many and then lets requests through. ``hits`` counts its answers.
    """

    def __init__(self, code: str, *, action: str | None = "RunInstances",
                 region: str | None = None, zone: str | None = None,
                 instance_type: str | None = None, spot: bool | None = None,
                 times: int | None = 1, message: str | None = None,
                 status: int | None = None):
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 or None (always), got {times}")
        self.code = code
        self.message = message
        self.status = status if status is not None else status_for(code)
        self.action = action
        self.region = region
        self.zone = zone
        self.instance_type = instance_type
        self.spot = spot
        self.times = times
        self.hits = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        criteria = {name: getattr(self, name) for name in
                    ("action", "region", "zone", "instance_type", "spot")}
        shown = ", ".join(f"{k}={v!r}" for k, v in criteria.items() if v is not None)
        return f"Rule({self.code!r}, {shown}, times={self.times!r}, hits={self.hits})"

    @property
    def exhausted(self) -> bool:
        """Whether the rule has answered all the requests it was given."""
        return self.times is not None and self.hits >= self.times

    def matches(self, facts: RequestFacts) -> bool:
        """Whether the request described by ``facts`` meets every criterion (ignores ``times``)."""
        return ((self.action is None or self.action == facts.action)
                and (self.region is None or self.region == facts.region)
                and (self.zone is None or self.zone == facts.zone)
                and (self.instance_type is None or self.instance_type == facts.instance_type)
                and (self.spot is None or self.spot == facts.spot))

    def take(self, facts: RequestFacts) -> bool:
        """Claim one answer for a matching request; False when it does not match or is used up."""
        if not self.matches(facts):
            return False
        with self._lock:
            if self.exhausted:
                return False
            self.hits += 1
            return True

    def response(self) -> tuple[int, bytes]:
        """``(status, body)`` of this rule's error answer."""
        _, body = error_response(self.code, self.message)
        return self.status, body
