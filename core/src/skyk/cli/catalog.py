"""``skyk catalog refresh``: fetch price catalogs for the installed clouds."""

from __future__ import annotations

from skyk.cli.output import add_output_flag, print_json, print_table

HELP = "Manage price catalogs (refresh them from a source URL or directory)."


def configure(parser) -> None:
    """Add this command's arguments."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    parser_class=type(parser))
    refresh = actions.add_parser("refresh", help="fetch catalog files for every installed cloud",
                                 description="Fetch catalog files for every installed cloud. "
                                 "Files you edited are kept unless --force is given.")
    refresh.add_argument("--source", metavar="URL|DIR",
                         help="catalog source (default: $SKYK_CATALOG_SOURCE or SkyPilot's v8 catalog)")
    refresh.add_argument("--force", action="store_true", help="overwrite files you edited")
    refresh.add_argument("--cloud", action="append", metavar="CLOUD", help="only this cloud")
    add_output_flag(refresh)


def run(args) -> int:
    """Refresh the catalog files the installed clouds read."""
    from dataclasses import asdict

    from skyk.catalog.refresh import default_source, refresh
    from skyk.catalog.store import catalog_dir
    from skyk.cli.output import warn_plugin_failures
    from skyk.errors import CatalogError
    from skyk.plugins.clouds import load_clouds

    if args.source is not None and not args.source.strip():
        # An empty --source is a mistake (an unset shell variable), not a request for the default.
        raise CatalogError("--source is empty", hint="give a URL or directory, or leave --source out"
                           " for $SKYK_CATALOG_SOURCE or SkyPilot's catalog")
    kernel = load_clouds(args.cloud, "--cloud")
    warn_plugin_failures(kernel)
    directory = catalog_dir()
    source = default_source() if args.source is None else args.source
    results = refresh(kernel.catalog_files(), directory, source, force=args.force)
    if args.output == "json":
        print_json([asdict(r) for r in results])
    else:
        print_table(["FILE", "RESULT", "DETAIL"], [[r.path, r.outcome, r.detail] for r in results])
        print(f"\nCatalog directory: {directory}")
    failed = [r for r in results if r.outcome == "failed"]
    if failed:
        raise CatalogError(f"{len(failed)} catalog file(s) could not be refreshed from {source}",
                           hint="check --source; the files that did refresh were kept")
    return 0
