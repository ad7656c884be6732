"""``skyk storage``: the buckets skyk made in your accounts, and deleting them."""

from __future__ import annotations

from skyk.cli.output import add_output_flag, print_json, print_table

HELP = "List or delete the buckets skyk made (storage objects with a name)."


def configure(parser) -> None:
    """Add the ``storage`` subcommands."""
    from skyk.cli.main import Parser

    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser, required=True)
    ls = verbs.add_parser("ls", help="list the buckets skyk made")
    add_output_flag(ls)
    ls.set_defaults(_verb=storage_ls)
    delete = verbs.add_parser("delete", help="delete buckets skyk made, with everything in them")
    delete.add_argument("names", nargs="*", metavar="NAME", help="the buckets to delete")
    delete.add_argument("-a", "--all", action="store_true", help="delete every bucket skyk made")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(_verb=storage_delete)


def run(args) -> int:
    """Run the chosen verb."""
    return args._verb(args)


def storage_ls(args) -> int:
    """Print the buckets skyk made: name, store, source, created, status."""
    from skyk.cli.status import ago
    from skyk.state import db, storage

    records = storage.list_storage(db.connect())
    if args.output == "json":
        print_json([{"name": r.name, "store": r.store, "source": r.source, "region": r.region,
                     "created_at": r.created_at, "status": r.status, "persistent": r.persistent,
                     "cluster": r.cluster, **({"note": r.note} if r.note else {})} for r in records])
        return 0
    if not records:
        print("No buckets made by skyk.")
        return 0
    print_table(["NAME", "STORE", "SOURCE", "CREATED", "STATUS", "PERSISTENT"],
                [[r.name, r.store, ", ".join(r.source) or "-", ago(r.created_at) if r.created_at else "-",
                  r.status, "yes" if r.persistent else f"no (deleted with {r.cluster})"] for r in records])
    return 0


def storage_delete(args) -> int:
    """Delete the named buckets (or all with ``-a``), after asking."""
    from skyk.cli.targets import confirm
    from skyk.errors import SkykError, not_found
    from skyk.lifecycle.buckets import delete, installed_stores
    from skyk.state import db, storage

    conn = db.connect()
    records = storage.list_storage(conn)
    if args.all and args.names:
        raise SkykError("name buckets or give -a, not both", hint="'skyk storage delete -a' deletes all")
    if not args.all and not args.names:
        raise SkykError("no bucket named", hint="'skyk storage ls' lists them; -a deletes all")
    if args.all:
        chosen = records
    else:
        chosen = []
        for name in dict.fromkeys(args.names):
            matches = [r for r in records if r.name == name]
            if not matches:
                raise not_found("bucket", name, [r.name for r in records],
                                hint="'skyk storage ls' lists the buckets skyk made")
            chosen += matches
    for record in chosen:
        used = storage.users(conn, record.store, record.name)
        if used:
            raise SkykError(f"bucket {record.name} is mounted by cluster {used[0]}",
                            hint=f"'skyk down {used[0]}' first")
    if not chosen:
        print("No buckets made by skyk.")
        return 0
    confirm("delete", [f"{r.name} ({r.store})" for r in chosen], args.yes)
    stores = installed_stores()
    for record in chosen:
        delete(conn, stores, record)
        print(f"Deleted bucket {record.name} ({record.store}).")
    return 0
