"""One firewall rule per launch attempt, for the task's ports, made only when it asks for some.

GCE's firewall rules take no labels: the rule is named
``skyk-<cluster>-<uid>`` (:func:`skyk_gcp.labels.firewall_name`) and applies
to instances carrying the same network tag, so a killed launch's rule is found
by its name. SSH (port 22) is not skyk's business here: the ``default``
network's ``default-allow-ssh`` rule lets it in.
"""

from __future__ import annotations

from skyk_gcp import errors, labels, operations, session

NETWORK = "global/networks/default"
ANYWHERE = "0.0.0.0/0"
#: seconds a firewall insert or delete has to be done
TIMEOUT = 120.0


def rule(cluster: str, uid: str, ports: tuple[int, ...]):
    """The ``compute_v1.Firewall`` opening ``ports`` (TCP) to the attempt's instances."""
    from google.cloud import compute_v1

    name = labels.firewall_name(cluster, uid)
    return compute_v1.Firewall(
        name=name, network=NETWORK, direction="INGRESS", source_ranges=[ANYWHERE],
        target_tags=[name], description=f"skyk cluster {cluster}, launch attempt {uid}",
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(p) for p in sorted(set(ports))])])


def create(cluster: str, uid: str, ports: tuple[int, ...]) -> str:
    """Make the attempt's rule (a repeat finds the first one's); return its name."""
    from google.cloud import compute_v1

    firewall = rule(cluster, uid, ports)
    request = compute_v1.InsertFirewallRequest(project=session.project(), firewall_resource=firewall,
                                               request_id=labels.request_id(cluster, uid, "firewall"))
    try:
        op = errors.call(session.client("FirewallsClient").insert_unary, request=request)
    except errors.api_errors() as exc:
        if errors.http_status(exc) != 409:  # made by an earlier try whose answer was lost
            raise
        return firewall.name
    operations.wait(op, TIMEOUT)
    return firewall.name


def find(uid: str) -> list[str]:
    """The names of the rules attempt ``uid`` made."""
    suffix = f"-{labels.label_value(uid)}"
    found = errors.call(session.client("FirewallsClient").list, project=session.project())
    return sorted(f.name for f in found if f.name.startswith("skyk-") and f.name.endswith(suffix))


def delete(names: list[str]) -> None:
    """Delete the rules (one already gone is fine), waiting until they are."""
    client = session.client("FirewallsClient")
    pending = []
    for name in names:
        try:
            pending.append(errors.call(client.delete_unary, project=session.project(), firewall=name))
        except errors.api_errors() as exc:
            if not errors.is_not_found(exc):
                raise
    for op in pending:
        operations.wait(op, TIMEOUT)
