"""The tags skyk puts on everything it creates in EC2, and the filters that find it again.

Every instance, volume and security group carries its cluster and its launch
attempt (the request's uid) from the moment it exists (``TagSpecifications``),
so whatever a killed launch left is found by the attempt alone.
"""

from __future__ import annotations

CLUSTER = "skyk-cluster"
ATTEMPT = "skyk-attempt"
#: on instances only, set once their launch indexes are known
RANK = "skyk-node-rank"


def attempt_tags(cluster: str, uid: str) -> list[dict[str, str]]:
    """The tags of what attempt ``uid`` of ``cluster`` creates, ``Name`` included (for the console)."""
    return [{"Key": CLUSTER, "Value": cluster}, {"Key": ATTEMPT, "Value": uid},
            {"Key": "Name", "Value": f"skyk-{cluster}"}]


def specification(resource_type: str, cluster: str, uid: str) -> dict:
    """One ``TagSpecifications`` entry: tag ``resource_type`` resources as attempt ``uid``'s."""
    return {"ResourceType": resource_type, "Tags": attempt_tags(cluster, uid)}


def attempt_filter(uid: str) -> dict:
    """The ``Filters`` entry matching what attempt ``uid`` made."""
    return {"Name": f"tag:{ATTEMPT}", "Values": [uid]}


def value(resource: dict, key: str) -> str | None:
    """Return tag ``key`` of a described resource, or None."""
    for tag in resource.get("Tags") or ():
        if tag.get("Key") == key:
            return tag.get("Value")
    return None
