"""``skyk launch``: plan a task, provision the cheapest feasible cluster, run the task there."""

from __future__ import annotations

from skyk.cli.argtypes import idle_minutes
from skyk.cli.output import add_output_flag, money, print_json, print_table

HELP = "Launch a task (YAML or a command) on the cheapest feasible cloud; --dryrun plans only."

#: command-line flag -> resources field it overrides
_OVERRIDES = {
    "cloud": "cloud", "region": "region", "zone": "zone", "infra": "infra",
    "gpus": "accelerators", "cpus": "cpus", "memory": "memory",
    "instance_type": "instance_type", "use_spot": "use_spot",
    "max_hourly_cost": "max_hourly_cost",
}

#: how many ranked candidates ``-o json`` lists
_JSON_CANDIDATES = 50


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("-c", "--cluster", metavar="NAME", help="cluster name (new or existing)")
    parser.add_argument("--dryrun", action="store_true", help="print the plan, provision nothing")
    parser.add_argument("-i", "--idle-minutes-to-autostop", dest="idle_minutes", type=idle_minutes,
                        metavar="N",
                        help="stop the cluster after N idle minutes (fractions allowed)")
    parser.add_argument("--down", action="store_true",
                        help="tear the cluster down (not stop) when idle; alone: once its jobs are done")
    parser.add_argument("--retry-until-up", action="store_true",
                        help="when every place fails, keep retrying with backoff until one works")
    add_task_arguments(parser)
    add_output_flag(parser)


def add_task_arguments(parser) -> None:
    """The task and the flags that shape it, as ``launch`` and ``jobs launch`` take them."""
    parser.add_argument("task", metavar="TASK|CMD", help="a task YAML file, or a command to run")
    parser.add_argument("-d", "--detach-run", dest="detach", action="store_true",
                        help="return once the job is submitted, without streaming its output")
    parser.add_argument("--cloud", help="pin a cloud (aws, gcp, azure, local, ...)")
    parser.add_argument("--region", help="pin a region")
    parser.add_argument("--zone", help="pin a zone")
    parser.add_argument("--infra", help="pin CLOUD[/REGION[/ZONE]]")
    parser.add_argument("--gpus", metavar="ACC[:COUNT]", help="accelerators, e.g. A100:8")
    parser.add_argument("--cpus", help="vCPUs, e.g. 8 or 8+")
    parser.add_argument("--memory", help="memory in GiB, e.g. 32 or 32+")
    parser.add_argument("--instance-type", help="pin an instance type")
    parser.add_argument("--use-spot", action="store_true", default=None, help="use spot instances")
    parser.add_argument("--max-hourly-cost", type=float, metavar="USD",
                        help="reject offerings costing more per hour (all nodes)")
    parser.add_argument("--num-nodes", type=int, metavar="N", help="number of nodes")
    parser.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set an env var; KEY alone takes the value from your environment")
    parser.add_argument("--secret", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set a secret, like --env but never printed")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def resource_flags() -> dict[str, str]:
    """Resource field -> the flag that sets it, for errors that name the flag."""
    return {field: f"--{flag.replace('_', '-')}" for flag, field in _OVERRIDES.items()}


def resource_overrides(args):
    """Return the ResourceFields the flags set, or None; errors name the flag."""
    from pydantic import ValidationError

    from skyk.errors import SpecError
    from skyk.spec.errors import spec_error
    from skyk.spec.resources import ResourceFields

    values = {}
    for flag, field in _OVERRIDES.items():
        value = getattr(args, flag)
        if value is None:
            continue
        try:
            ResourceFields.model_validate({field: value})
        except ValidationError as exc:
            error = spec_error("", exc)
            message = error.message.split(": ", 2)[-1]
            raise SpecError(f"--{flag.replace('_', '-')}: {message}", hint=error.hint) from None
        values[field] = value
    if not values:
        return None
    try:
        return ResourceFields.model_validate(values)
    except ValidationError as exc:  # flags that contradict each other, e.g. --infra with --cloud
        error = spec_error("", exc)
        raise SpecError(f"flags: {error.message.split(': ', 2)[-1]}", hint=error.hint) from None


def check_cluster_name(name: str, flag: str) -> str:
    """Return ``name`` if it is a safe cluster name; else raise a one-line error naming ``flag``."""
    from skyk.errors import SpecError
    from skyk.spec.values import check_safe_name

    try:
        return check_safe_name(name, "cluster name")
    except ValueError as exc:
        message, _, hint = str(exc).partition(" | hint: ")
        raise SpecError(f"{flag}{message}", hint=hint) from None


def task_or_command(text: str):
    """Load ``text`` as a task YAML file, or make a task that runs it as a command."""
    import os

    from skyk.spec.task import load_task, task_from_mapping

    if os.path.exists(text) or text.endswith((".yaml", ".yml")):
        task = load_task(text)
        task.warn_ignored()
        return task
    return task_from_mapping({"run": text}, "<command>")


def load(args):
    """Load the task with the command line applied; return (task, resource override)."""
    if args.cluster is not None:
        check_cluster_name(args.cluster, "-c: ")
    task = task_or_command(args.task).with_overrides(args.env, args.secret)
    if args.num_nodes is not None:
        task = task.with_num_nodes(args.num_nodes, "--num-nodes")
    if task.runtime is not None:
        # Only a task with runtime: loads a runtime plugin.
        from skyk.runtime.resolve import resolve_task

        task = resolve_task(task)
    task.check_ready()
    return task, resource_overrides(args)


def _row(candidate, chosen: bool, sizing=None) -> dict:
    offering = candidate.offering
    fit = sizing.fit_for(offering.accelerator, offering.accelerator_count) if sizing else None
    return {
        "infra": offering.infra, "cloud": offering.cloud, "region": offering.region,
        "zone": offering.zone, "instance_type": offering.instance_type,
        "vcpus": offering.vcpus, "memory_gib": offering.memory_gib,
        "accelerators": None if not offering.accelerator else
        {"name": offering.accelerator, "count": offering.accelerator_count},
        "use_spot": candidate.use_spot, "hourly_cost": round(candidate.hourly_cost, 6),
        "chosen": chosen,
        **({"fits": fit.why()} if fit else {}),
    }


def run(args) -> int:
    """Print the plan (``--dryrun``), or launch the task and follow its job."""
    if args.output == "json" and not args.dryrun:
        from skyk.errors import SpecError

        # A launch streams its job's output; only the plan has a JSON form.
        raise SpecError("-o json prints the plan of a --dryrun; a launch streams the job's output",
                        hint="add --dryrun, or after the launch read 'skyk status NAME -o json'")
    task, override = load(args)
    flags = resource_flags()
    if args.dryrun:
        return dry_run(args, task, override, flags)
    from skyk.lifecycle.launch import LaunchOptions, launch

    cluster = args.cluster or _generated_name()
    return launch(task, LaunchOptions(cluster, override, flags, detach=args.detach,
                                      idle_minutes=args.idle_minutes, down=args.down,
                                      retry_until_up=args.retry_until_up, confirm=not args.yes))


def _generated_name() -> str:
    import secrets

    return f"skyk-{secrets.token_hex(2)}"


def dry_run(args, task, override, flags) -> int:
    """Plan the task; print the optimizer table (or JSON)."""
    from skyk.catalog.offering import format_count
    from skyk.cli.output import warn_plugin_failures
    from skyk.optimizer.planner import plan_task

    planned = plan_task(task, override, flags=flags)
    warn_plugin_failures(planned.kernel)
    plan = planned.plan
    best = plan.best
    shown = planned.plan.best_per_cloud()
    sizing = planned.sizing
    if args.output == "json":
        print_json({
            "task": task.name, "cluster": args.cluster, "num_nodes": task.num_nodes,
            **({"workdir": task.git_workdir.model_dump()} if task.git_workdir else {}),
            **({"pool": {"workers": task.pool.workers}} if task.pool else {}),
            **({"model_size": _sizing_json(sizing)} if sizing else {}),
            "chosen": _row(best, True, sizing), "considered": plan.considered,
            "best_per_cloud": [_row(c, c is best, sizing) for c in shown],
            "candidates": [_row(c, c is best, sizing) for c in plan.candidates[:_JSON_CANDIDATES]],
        })
    else:
        nodes = f"{task.num_nodes}x " if task.num_nodes > 1 else ""
        print(f"Plan for task {task.name or '(unnamed)'}"
              f"{' on cluster ' + args.cluster if args.cluster else ''}:")
        if task.pool:
            print(f"Pool of {task.pool.workers} worker(s); the plan is for one worker:")
        if task.git_workdir:
            print(f"Workdir: each node clones {task.git_workdir.describe()} into ~/sky_workdir")
        if sizing:
            _print_sizing(sizing)
        headers = ["INFRA", "INSTANCE", "vCPUs", "MEM(GiB)", "ACCELERATORS", "$/h", "CHOSEN"]
        rows = [[c.offering.infra, nodes + c.offering.instance_type + (" [spot]" if c.use_spot else ""),
                 format_count(c.offering.vcpus), format_count(c.offering.memory_gib),
                 c.offering.accelerators_label, money(c.hourly_cost), "✔" if c is best else ""]
                for c in shown]
        if sizing:
            headers.append("WHY IT FITS")
            for row, c in zip(rows, shown, strict=True):
                fit = sizing.fit_for(c.offering.accelerator, c.offering.accelerator_count)
                row.append(fit.why() if fit else None)
        print_table(headers, rows)
        clouds = len({c.offering.cloud for c in plan.candidates})
        print(f"\nConsidered {plan.considered} candidates on {clouds} cloud(s); "
              f"chose {best.offering.instance_type} on {best.offering.infra} "
              f"at ${best.hourly_cost:.2f}/h.")
    return 0


def _sizing_json(sizing) -> dict:
    return {**sizing.estimate.as_dict(),
            "fits": [{"accelerators": {"name": f.accelerator, "count": f.count},
                      "total_gib": round(f.total_gib, 2), "usable_gib": round(f.usable_gib, 2)}
                     for f in sizing.fits]}


def _print_sizing(sizing) -> None:
    """Print the model's memory estimate and the fewest GPUs of each kind that hold it."""
    from skyk.optimizer.model_size import HEADROOM, OVERHEAD_GIB, format_params, gib

    need = sizing.estimate
    print(f"Model {need.model} (size from {need.source}):")
    print(f"  ~{format_params(need.params)} parameters x {need.bytes_per_param:g} bytes ({need.dtype})"
          f" = {gib(need.weights_gib)} GiB of weights")
    print(f"  needs ~{gib(need.needed_gib)} GiB: weights x {HEADROOM:g} for KV cache"
          f" + {OVERHEAD_GIB:g} GiB engine overhead; the engine uses {need.usable_fraction:.0%}"
          " of GPU memory")
    print("  GPU sets that fit (fewest of each kind): "
          + ", ".join(f"{f.accelerator}:{f.count}" for f in sizing.smallest()) + "\n")
