"""``skyk status``: clusters from local state, or just one value for shells."""

from __future__ import annotations

from skyk.cli.output import add_output_flag

HELP = "Show clusters; --ip/--endpoint print one bare value for shell substitution."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("clusters", nargs="*", metavar="NAME", help="only these clusters")
    parser.add_argument("-r", "--refresh", action="store_true",
                        help="ask the clouds and agents what really runs, and update the state")
    parser.add_argument("-a", "--all", action="store_true",
                        help="also show clusters owned by a service (its replicas)")
    parser.add_argument("--ip", metavar="NAME", help="print the head node's IP of cluster NAME")
    parser.add_argument("--endpoint", nargs=2, metavar=("PORT", "NAME"),
                        help="print HOST:PORT where cluster NAME serves PORT")
    add_output_flag(parser)


def ago(timestamp: float) -> str:
    """Say how long ago ``timestamp`` was, briefly."""
    import time

    seconds = max(0, time.time() - timestamp)
    for size, unit in ((86400, "day"), (3600, "hr"), (60, "min")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "a few secs ago"


def duration(seconds: float) -> str:
    """``45s``, ``12m`` or ``3.5h``."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def resources(handle) -> str:
    """``2x m5.large {A100:8}`` as tables show a cluster's nodes."""
    if handle is None:
        return "-"
    text = f"{len(handle.nodes)}x {handle.instance_type}"
    if handle.accelerator:
        text += f" {{{handle.accelerator}:{handle.accelerator_count:g}}}"
    return text + (" [spot]" if handle.use_spot else "")


def cloud_resources(handle, cloud: str) -> str:
    """``1x Azure({'A100-80GB': 8})`` or ``1x AWS([Spot]t3.medium)``: a replica's nodes as
    SkyPilot's service tables show them, ``cloud`` being the cloud's display name."""
    if handle is None:
        return "-"
    inside = f"{{{handle.accelerator!r}: {handle.accelerator_count:g}}}" if handle.accelerator \
        else handle.instance_type
    return f"{len(handle.nodes)}x {cloud}({'[Spot]' if handle.use_spot else ''}{inside})"


def autostop_label(record) -> str:
    """``10m (down)`` or ``-``."""
    if record.autostop_minutes is None:
        return "-"
    return f"{record.autostop_minutes:g}m" + (" (down)" if record.autostop_down else "")


def run(args) -> int:
    """Print the table, JSON, or one bare value."""
    from skyk.state import clusters, db

    conn = db.connect()
    if args.ip or args.endpoint:
        return _bare_value(conn, args)
    records = clusters.list_clusters(conn)
    hidden = 0
    if args.clusters:
        from skyk.lifecycle.lookup import require

        records = [require(conn, name) for name in dict.fromkeys(args.clusters)]
    elif not args.all:
        # As in SkyPilot, a service's replicas and a managed job's clusters are their controller's
        # business: 'serve status' and 'jobs queue' show them.
        hidden = sum(r.owner is not None for r in records)
        records = [r for r in records if r.owner is None]
    failed: list[BaseException] = []
    if args.refresh:
        records = _refreshed(conn, records, failed)
    if args.output == "json":
        from skyk.cli.output import print_json

        print_json([_json(r) for r in records])
        return _done(failed, len(records))
    if not records:
        print("No clusters. Launch one with: skyk launch -c NAME TASK.yaml")
    if not args.all and not args.clusters and hidden:
        print(f"({hidden} cluster(s) of services or managed jobs not shown: 'skyk status -a' shows them)")
    if not records:
        return _done(failed, len(records))
    from skyk.cli.output import print_table

    owners = any(r.owner for r in records)
    print_table(["NAME", "LAUNCHED", "INFRA", "RESOURCES", "STATUS", "AUTOSTOP", "HEAD_IP"]
                + (["OWNER"] if owners else []),
                [[r.name, ago(r.launched_at) if r.launched_at else "-", r.handle.infra if r.handle else "-",
                  resources(r.handle), r.status + (f" ({r.note})" if r.note else ""), autostop_label(r),
                  r.handle.head.ip if r.handle else "-"] + ([_owner(r)] if owners else []) for r in records])
    return _done(failed, len(records))


def _refreshed(conn, records: list, failed: list[BaseException]) -> list:
    """Ask each cluster's cloud what really runs; a cluster whose cloud fails keeps its recorded
    state (its error joins ``failed``), so one unreachable cloud does not hide the others."""
    from skyk.errors import SkykError
    from skyk.lifecycle.control import refresh

    kept = []
    for record in records:
        try:
            record = refresh(conn, record)
        except SkykError as exc:
            failed.append(exc)
        if record is not None:
            kept.append(record)
    return kept


def _done(failed: list[BaseException], total: int) -> int:
    """Exit 0, or report the clusters that could not be refreshed (after the table)."""
    from skyk.cli.targets import raise_failures

    raise_failures(failed, total, "refreshed")
    return 0


def _owner(record) -> str:
    owner = record.owner
    if owner is None:
        return "-"
    return f"service {owner.name} (replica {owner.number})" if owner.kind == "service" else owner.group


def _owner_json(owner) -> dict | None:
    if owner is None:
        return None
    if owner.kind == "service":
        return {"service": owner.name, "replica_id": owner.number}
    return {"managed_job": owner.number, "name": owner.name}


def _json(record) -> dict:
    handle = record.handle
    return {
        "name": record.name, "status": record.status, "note": record.note,
        "launched_at": record.launched_at,
        "cloud": handle.cloud if handle else None, "region": handle.region if handle else None,
        "zone": handle.zone if handle else None, "infra": handle.infra if handle else None,
        "instance_type": handle.instance_type if handle else None,
        "num_nodes": len(handle.nodes) if handle else None,
        "accelerators": {handle.accelerator: handle.accelerator_count}
        if handle and handle.accelerator else None,
        "use_spot": handle.use_spot if handle else None,
        "hourly_price": handle.hourly_price if handle else None,
        "head_ip": handle.head.ip if handle else None,
        "node_ips": [n.ip for n in handle.nodes] if handle else [],
        "autostop": {"idle_minutes": record.autostop_minutes, "down": record.autostop_down}
        if record.autostop_minutes is not None else None,
        "owner": _owner_json(record.owner),
    }


def _bare_value(conn, args) -> int:
    from skyk.errors import SkykError, SpecError
    from skyk.lifecycle.lookup import require

    if args.ip and args.endpoint:
        raise SpecError("give --ip or --endpoint, not both", hint="skyk status --ip NAME")
    if args.endpoint:
        from skyk.spec.values import parse_ports

        port_text, name = args.endpoint
        try:
            (port, last), = parse_ports(port_text)
        except ValueError:
            port, last = 0, -1
        if port != last:
            raise SpecError(f"--endpoint: port must be a number from 1 to 65535, got {port_text!r}",
                            hint="skyk status --endpoint 8000 NAME")
    else:
        name = args.ip
    record = require(conn, name)
    if record.handle is None:
        raise SkykError(f"cluster {name} has no nodes yet ({record.status})",
                        hint=f"'skyk status -r {name}' checks it")
    ip = record.handle.head.ip
    print(f"{ip}:{port}" if args.endpoint else ip)
    return 0
