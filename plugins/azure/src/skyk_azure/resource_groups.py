"""One resource group per launch attempt, holding everything the attempt makes.

Named ``skyk-<cluster>-<region>-<uid>`` and tagged with the cluster and the
attempt, so a killed launch's group is found by its tags, and two attempts
(or a cluster launched again while its old group is still being deleted)
never share a group. Deleting the group deletes all that is in it, in the
order Azure needs, in one long-running operation.
"""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError

from skyk_azure import errors, session, tags
from skyk_azure.session import Clients


def group_name(cluster: str, region: str, uid: str) -> str:
    """The attempt's group (cluster names are short and safe; ARM allows 90 characters)."""
    return f"skyk-{cluster}-{region}-{uid}"


def create(clients: Clients, name: str, region: str, labels: dict[str, str]) -> None:
    """Make the group in ``region`` with tags ``labels`` (a repeat of the same PUT is harmless)."""
    errors.call(clients.resource.resource_groups.create_or_update, name,
                {"location": region, "tags": labels})


def find(clients: Clients, uid: str) -> list[str]:
    """The names of the groups tagged as attempt ``uid``'s."""
    found = errors.call(lambda: list(clients.resource.resource_groups.list(
        filter=tags.attempt_filter(uid))))
    # The filter is the server's; the tag is checked again here, as it is the contract.
    return sorted(g.name for g in found if (g.tags or {}).get(tags.ATTEMPT) == uid)


def delete(clients: Clients, names: list[str]) -> None:
    """Delete the groups and everything in them, and wait until they are gone.

    A group that is not there (any more) is fine.
    """
    pollers = []
    for name in dict.fromkeys(names):
        try:
            pollers.append(errors.call(clients.resource.resource_groups.begin_delete, name, polling=session.polling()))
        except ResourceNotFoundError:
            continue
    for poller in pollers:
        try:
            poller.result()
        except ResourceNotFoundError:
            continue
