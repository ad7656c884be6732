"""``skyk show-gpus``: accelerators on offer and their prices."""

from __future__ import annotations

import sys

from skyk.cli.output import add_output_flag, money, print_json, print_table

HELP = "List accelerators, or the price of one (ACC or ACC:COUNT) on each cloud."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("accelerator", nargs="?", metavar="ACC[:COUNT]",
                        help="show prices for this accelerator, e.g. A100 or A100:8")
    parser.add_argument("--cloud", help="only this cloud")
    parser.add_argument("--all-regions", action="store_true",
                        help="one row per region instead of the cheapest region only")
    parser.add_argument("--all", action="store_true",
                        help="list TPU slices too (hidden by default: there are hundreds)")
    add_output_flag(parser)


def _best(prices: list[float | None]) -> float | None:
    known = [p for p in prices if p is not None]
    return min(known) if known else None


def _is_tpu(accelerator: str) -> bool:
    # Cloud TPU slices are named tpu-<generation>-<cores>, as in SkyPilot's catalogs.
    return accelerator.lower().startswith("tpu-")


def _memory_gib(accelerator: str) -> float | None:
    from skyk.catalog.gpus import gpu_spec

    spec = gpu_spec(accelerator)
    return round(spec.memory_gib) if spec else None


def run(args) -> int:
    """Print the accelerator list or a price table."""
    from skyk.catalog.accelerators import not_offered
    from skyk.catalog.offering import format_count
    from skyk.catalog.store import Catalog
    from skyk.cli.output import warn_plugin_failures
    from skyk.errors import SpecError
    from skyk.plugins.clouds import load_clouds
    from skyk.spec.values import count_fits, parse_accelerator

    kernel = load_clouds([args.cloud] if args.cloud else None, "--cloud")
    warn_plugin_failures(kernel)
    catalog = Catalog.load(kernel)
    for cloud, error in sorted(catalog.errors.items()):
        print(f"skyk: warning: {cloud}: {error}", file=sys.stderr)

    if not args.accelerator:
        by_name: dict[str, dict[str, set[float]]] = {}
        for offering in catalog.all():
            if offering.accelerator:
                clouds = by_name.setdefault(offering.accelerator, {})
                clouds.setdefault(offering.cloud, set()).add(offering.accelerator_count)
        tpus = sorted(n for n in by_name if _is_tpu(n))
        shown = {n: c for n, c in by_name.items() if args.all or not _is_tpu(n)}
        rows = [{"accelerator": name, "memory_gib": _memory_gib(name),
                 "counts": sorted({c for counts in clouds.values() for c in counts}),
                 "clouds": sorted(clouds)}
                for name, clouds in sorted(shown.items(), key=lambda kv: kv[0].casefold())]
        if args.output == "json":
            print_json(rows)
            return 0
        print_table(["ACCELERATOR", "GPU_MEM(GiB)", "COUNTS", "CLOUDS"],
                    [[r["accelerator"], r["memory_gib"], ", ".join(format_count(c) for c in r["counts"]),
                      ", ".join(r["clouds"])] for r in rows])
        if tpus and not args.all:
            print(f"\n{len(tpus)} TPU slices ({tpus[0]} ... {tpus[-1]}) are not shown:"
                  " 'skyk show-gpus --all' lists them")
        return 0

    try:
        wanted = parse_accelerator(args.accelerator)
    except ValueError as exc:
        message, _, hint = str(exc).partition(" | hint: ")
        raise SpecError(f"show-gpus: {message}", hint=hint or None) from None
    offered = catalog.accelerator_names()
    name = offered.canonical(wanted.name, "show-gpus")
    if name not in offered:
        raise not_offered([name], [args.cloud.lower()] if args.cloud else None, "show-gpus")
    # With a count, the offerings a launch would take for it (T4:0.5 fits a one-T4 machine).
    exact_count = ":" in args.accelerator
    groups: dict[tuple, list] = {}
    for offering in catalog.with_accelerator(name):
        if exact_count and not count_fits(wanted.count, offering.accelerator_count):
            continue
        key = (offering.cloud, offering.instance_type, offering.accelerator_count)
        if args.all_regions:
            key += (offering.region,)
        groups.setdefault(key, []).append(offering)
    rows = []
    for offerings in groups.values():
        cheapest = min(offerings, key=lambda o: (o.price is None, o.price or 0.0))
        # Every price in a row is the region's the row names (its cheapest zone's).
        here = [o for o in offerings if o.region == cheapest.region]
        rows.append({
            "cloud": cheapest.cloud, "instance_type": cheapest.instance_type,
            "accelerator": name, "accelerator_count": cheapest.accelerator_count,
            "vcpus": cheapest.vcpus, "memory_gib": cheapest.memory_gib,
            "gpu_memory_gib": _memory_gib(name),
            "price": _best([o.price for o in here]),
            "spot_price": _best([o.spot_price for o in here]),
            "region": cheapest.region,
        })
    rows.sort(key=lambda r: (r["accelerator_count"], r["price"] is None, r["price"] or 0.0,
                             r["cloud"], r["instance_type"], r["region"]))
    if not rows:
        raise SpecError(f"show-gpus: no cloud offers {args.accelerator}",
                        hint=f"run 'skyk show-gpus {name}' for the counts on offer")
    if args.output == "json":
        print_json(rows)
        return 0
    print_table(["CLOUD", "INSTANCE", "ACCELERATORS", "vCPUs", "MEM(GiB)", "$/h", "SPOT $/h", "REGION"],
                [[r["cloud"], r["instance_type"], f"{name}:{format_count(r['accelerator_count'])}",
                  format_count(r["vcpus"]), format_count(r["memory_gib"]), money(r["price"]),
                  money(r["spot_price"]), r["region"]] for r in rows])
    return 0
