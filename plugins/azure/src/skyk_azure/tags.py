"""The tags skyk puts on everything it creates in Azure, and the filter that finds it again.

Every resource group and resource carries its cluster and its launch attempt
(the request's uid) from the moment it exists (tags are part of each create
request), so whatever a killed launch left is found by the attempt alone.
"""

from __future__ import annotations

CLUSTER = "skyk-cluster"
ATTEMPT = "skyk-attempt"
#: on a node's VM, public IP and NIC
RANK = "skyk-node-rank"


def attempt_tags(cluster: str, uid: str, rank: int | None = None) -> dict[str, str]:
    """The tags of what attempt ``uid`` of ``cluster`` creates (for node ``rank``, if given)."""
    tags = {CLUSTER: cluster, ATTEMPT: uid}
    if rank is not None:
        tags[RANK] = str(rank)
    return tags


def attempt_filter(uid: str) -> str:
    """The OData ``$filter`` that lists resource groups tagged as attempt ``uid``'s.

    ARM filters on one tag at a time, by name and value.
    """
    return f"tagName eq '{ATTEMPT}' and tagValue eq '{uid}'"
