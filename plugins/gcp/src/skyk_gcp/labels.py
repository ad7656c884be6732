"""The labels and names skyk gives what it makes in Compute Engine.

Every instance (and its boot disk) carries its cluster, its launch attempt
(the request's uid) and its node rank from the moment it exists, so whatever
a killed launch left is found by the attempt alone. Firewall rules take no
labels: theirs is found by name, which ends with the attempt's uid.
"""

from __future__ import annotations

import re
import uuid

CLUSTER = "skyk-cluster"
ATTEMPT = "skyk-attempt"
RANK = "skyk-node-rank"
#: GCE's rule for resource names (instances, firewalls, network tags): 1-63 characters.
NAME_LIMIT = 63
#: The namespace of request ids: uuid5(this, "cluster/uid/what") is the same on every retry.
_REQUESTS = uuid.UUID("6f3c1e2a-5b7d-4c1e-9a3f-2d8e7b6c5a41")
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def label_value(text: str) -> str:
    """``text`` as a label value: lower case letters, digits, ``-`` and ``_``, at most 63."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:NAME_LIMIT]


def attempt_labels(cluster: str, uid: str, rank: int | None = None) -> dict[str, str]:
    """The labels of what attempt ``uid`` of ``cluster`` makes (node ``rank``'s, if given)."""
    labels = {CLUSTER: label_value(cluster), ATTEMPT: label_value(uid)}
    if rank is not None:
        labels[RANK] = str(rank)
    return labels


def attempt_filter(uid: str) -> str:
    """The list ``filter`` matching what attempt ``uid`` made."""
    return f'labels.{ATTEMPT} = "{label_value(uid)}"'


def resource_name(cluster: str, uid: str, suffix: str = "") -> str:
    """A GCE name ``{cluster}-{uid}[-{suffix}]``: the cluster name made safe and shortened to fit."""
    tail = f"-{label_value(uid)}" + (f"-{suffix}" if suffix else "")
    base = _UNSAFE.sub("-", cluster.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"skyk-{base}".rstrip("-")
    return base[:NAME_LIMIT - len(tail)].rstrip("-") + tail


def instance_name(cluster: str, uid: str, rank: int) -> str:
    """Node ``rank``'s instance name, unique to the attempt."""
    return resource_name(cluster, uid, str(rank))


def firewall_name(cluster: str, uid: str) -> str:
    """The attempt's firewall rule name, also the network tag its instances carry."""
    return resource_name(f"skyk-{cluster}", uid)


def request_id(cluster: str, uid: str, what: str) -> str:
    """The ``requestId`` of one insert of the attempt: a retry carries the same, so GCE makes one."""
    return str(uuid.uuid5(_REQUESTS, f"{cluster}/{uid}/{what}"))


def rank(labels: dict[str, str] | None) -> int | None:
    """The node rank in ``labels``, or None."""
    value = (labels or {}).get(RANK, "")
    return int(value) if value.isdigit() else None
