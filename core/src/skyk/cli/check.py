"""``skyk check``: which clouds are usable, and why not."""

from __future__ import annotations

from skyk.cli.output import add_output_flag, print_json, print_table

HELP = "Show which clouds are usable and why not (no network needed)."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("clouds", nargs="*", metavar="CLOUD", help="check only these clouds")
    add_output_flag(parser)


def run(args) -> int:
    """Check each cloud's credentials and print the verdicts."""
    from skyk.plugins.clouds import load_clouds

    kernel = load_clouds(args.clouds, "skyk check")
    rows = []
    for name, cloud in sorted(kernel.clouds().items()):
        result = cloud.check_credentials()
        rows.append({"cloud": name, "enabled": result.ok, "reason": result.reason,
                     "hint": result.hint})
    for info in kernel.plugins:
        if info.disabled or info.error:
            rows.append({"cloud": info.name, "enabled": False,
                         "reason": "disabled by SKYK_DISABLE_PLUGINS" if info.disabled
                         else f"plugin failed to load: {info.error}",
                         "hint": None if info.disabled else f"reinstall {info.distribution}"})
    if args.output == "json":
        print_json(rows)
        return 0
    print_table(["CLOUD", "STATUS", "REASON"],
                [[r["cloud"], "enabled" if r["enabled"] else "disabled",
                  r["reason"] + (f" (hint: {r['hint']})" if r["hint"] else "")] for r in rows])
    enabled = [r["cloud"] for r in rows if r["enabled"]]
    print(f"\nEnabled clouds: {', '.join(enabled) or 'none'}")
    return 0
