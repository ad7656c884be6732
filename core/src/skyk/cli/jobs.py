"""``skyk jobs``: managed jobs, seen through preemptions and failures by the jobs controller.

``queue``, ``logs`` and ``cancel`` read the state database and the job logs
alone (no pydantic, no plugin), so they answer fast however many jobs there are.
"""

from __future__ import annotations

import argparse
import sys

from skyk.cli.output import add_output_flag

HELP = "Managed jobs that survive preemption: launch, queue, logs, cancel."


def configure(parser) -> None:
    """Add the ``jobs`` subcommands."""
    from skyk.cli.launch import add_task_arguments
    from skyk.cli.main import Parser

    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser, required=True)
    launch = verbs.add_parser("launch", help="submit a task (or a pipeline of tasks) as a managed job")
    add_task_arguments(launch)
    launch.add_argument("-n", "--name", metavar="NAME", help="the job's name (default: the task's)")
    launch.add_argument("--job-recovery", metavar="STRATEGY",
                        help="how to recover from preemption: EAGER_NEXT_REGION (default) or FAILOVER")
    launch.set_defaults(_verb=jobs_launch)

    queue = verbs.add_parser("queue", help="managed jobs, newest first")
    queue.add_argument("-a", "--all", action="store_true", help="also show where each runs and why")
    queue.add_argument("-s", "--skip-finished", action="store_true", help="only jobs not yet finished")
    add_output_flag(queue)
    queue.set_defaults(_verb=jobs_queue)

    logs = verbs.add_parser("logs", help="a managed job's output, over all its attempts")
    logs.add_argument("job_id", nargs="?", type=int, metavar="ID", help="the job (default: the newest)")
    logs.add_argument("--controller", action="store_true", help="the jobs controller's log instead")
    logs.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True,
                      help="keep streaming until the job ends (default) or print what exists")
    logs.set_defaults(_verb=jobs_logs)

    cancel = verbs.add_parser("cancel", help="cancel managed jobs and tear down their clusters")
    cancel.add_argument("job_ids", nargs="*", type=int, metavar="ID")
    cancel.add_argument("-n", "--name", metavar="NAME", help="the unfinished jobs of this name")
    cancel.add_argument("-a", "--all", action="store_true", help="every unfinished job")
    cancel.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    cancel.set_defaults(_verb=jobs_cancel)


def run(args) -> int:
    """Run the chosen verb."""
    return args._verb(args)


# -- launch -----------------------------------------------------------------------------------------


def load_pipeline(args) -> tuple[str | None, list[dict], list]:
    """Read ``args.task`` (a YAML file of one task or a pipeline, or a command); return
    (pipeline name, the stored mapping of each task, each Task) with the command line applied.

    A pipeline is a multi-document YAML file: its tasks run in order. A first
    document holding only ``name:`` names the pipeline, as in SkyPilot.
    """
    import os

    from skyk.errors import SpecError
    from skyk.spec.stored import stored_mapping
    from skyk.spec.task import task_from_mapping
    from skyk.spec.yamlfile import load_yaml_mappings

    if os.path.exists(args.task) or args.task.endswith((".yaml", ".yml")):
        documents = load_yaml_mappings(args.task, "task")
        source = args.task
    else:
        documents, source = [{"run": args.task}], "<command>"
    documents = [d for d in documents if d is not None]
    pipeline_name = None
    if len(documents) > 1 and set(documents[0]) == {"name"}:
        pipeline_name = str(documents[0]["name"])
        documents = documents[1:]
    mappings, tasks = [], []
    for index, mapping in enumerate(documents):
        where = f"{source} (task {index + 1})" if len(documents) > 1 else source
        task = task_from_mapping(mapping, where).with_overrides(args.env, args.secret)
        if args.num_nodes is not None:
            task = task.with_num_nodes(args.num_nodes, "--num-nodes")
        task.check_ready()
        task.warn_ignored()
        if not task.run:
            raise SpecError(f"{where}: a managed job needs a run: command",
                            hint="add 'run: ...' (setup alone leaves nothing to see through)")
        if task.service is not None:
            raise SpecError(f"{where}: has a service section; a managed job runs to an end",
                            hint="serve it with 'skyk serve up'")
        if task.pool is not None:
            raise SpecError(f"{where}: pool: worker pools are not supported by managed jobs yet",
                            hint="drop pool: to run the task as one managed job")
        mappings.append(stored_mapping(mapping, task))
        tasks.append(task)
    return pipeline_name, mappings, tasks


def _strategy(args, tasks) -> str:
    """The recovery strategy: ``--job-recovery``, else the first task's ``job_recovery``, else the default."""
    from skyk.errors import not_found
    from skyk.jobs.recovery import DEFAULT_STRATEGY
    from skyk.plugins.manager import Kernel

    named = args.job_recovery.upper() if args.job_recovery else None
    for task in tasks:
        spec = task.resources.job_recovery
        if named is None and spec is not None and spec.strategy:
            named = spec.strategy
    named = named or DEFAULT_STRATEGY
    known = Kernel.load(("policy",)).recovery_strategies()
    if named not in known:
        raise not_found("recovery strategy", named, sorted(known),
                        hint=f"known strategies: {', '.join(sorted(known))}")
    return named


def _check_placeable(tasks, override, flags) -> str:
    """Plan each task now, so one that cannot run anywhere fails here; return what the queue shows."""
    from skyk.lifecycle.buckets import plan as plan_buckets
    from skyk.lifecycle.nodes import check_mounts
    from skyk.optimizer.planner import plan_task

    shown = []
    for task in tasks:
        planned = plan_task(task, override, flags=flags, enabled_only=True)
        best = planned.plan.best.offering
        check_mounts(task, best.cloud)
        plan_buckets(task, best.cloud)
        requirements = task.resources.requirements_with(override, flags)
        more = f" (+{len(requirements) - 1})" if len(requirements) > 1 else ""
        shown.append(f"{task.num_nodes}x [{requirements[0].describe()}]{more}")
    return shown[0] if len(set(shown)) == 1 else " → ".join(shown)


def jobs_launch(args) -> int:
    """Check and record the job, make sure the controller runs, and follow the job's log."""
    from skyk.cli.launch import resource_flags, resource_overrides
    from skyk.jobs import daemon, state
    from skyk.jobs.controller import check_settings
    from skyk.lifecycle.progress import say
    from skyk.spec.values import check_safe_name
    from skyk.state import db

    check_settings()
    pipeline_name, mappings, tasks = load_pipeline(args)
    if args.name is not None:
        try:
            check_safe_name(args.name, "job name")
        except ValueError as exc:
            from skyk.errors import SpecError

            message, _, hint = str(exc).partition(" | hint: ")
            raise SpecError(f"-n: {message}", hint=hint) from None
    override = resource_overrides(args)
    flags = resource_flags()
    strategy = _strategy(args, tasks)
    resources = _check_placeable(tasks, override, flags)
    name = args.name or pipeline_name or tasks[0].name
    conn = db.connect()
    job_id = state.add(conn, name, mappings, override.model_dump(exclude_unset=True) if override else {},
                       strategy, resources)
    _, started = daemon.ensure_running()
    kind = f"pipeline of {len(tasks)} tasks" if len(tasks) > 1 else "job"
    say(f"✓ Managed {kind} {job_id}{f' ({name})' if name else ''} submitted; recovery: {strategy}."
        + (" Started the jobs controller." if started else ""))
    if args.detach:
        say(f"Follow it with: skyk jobs logs {job_id}; see it with: skyk jobs queue")
        return 0
    return _follow(conn, job_id)


# -- queue ------------------------------------------------------------------------------------------


def _keep_controller(conn) -> None:
    """Start the controller again if jobs are unfinished and none runs (it died, or the machine rebooted)."""
    from skyk.jobs import daemon, state

    if daemon.running_pid() is None and state.list_jobs(conn, unfinished_only=True):
        daemon.ensure_running()
        print("(the jobs controller was not running; started it again, and it resumes every job)",
              file=sys.stderr)


def jobs_queue(args) -> int:
    """Print the managed jobs."""
    import time

    from skyk.cli.output import print_json, print_table
    from skyk.cli.status import ago, duration
    from skyk.jobs import state
    from skyk.state import db

    conn = db.connect()
    _keep_controller(conn)
    jobs = state.list_jobs(conn, unfinished_only=args.skip_finished)
    now = time.time()
    if args.output == "json":
        print_json([_json(j, now) for j in jobs])
        return 0
    if not jobs:
        print("No managed jobs. Submit one with: skyk jobs launch TASK.yaml")
        return 0
    headers = ["ID", "TASK", "NAME", "RESOURCES", "SUBMITTED", "TOT. DURATION", "JOB DURATION", "#RECOVERIES",
               "STATUS"] + (["INFRA", "CLUSTER", "DETAILS"] if args.all else [])
    rows = []
    for job in jobs:
        row = [job.id, f"{job.task_index + 1}/{len(job.tasks)}" if len(job.tasks) > 1 else "-",
               job.name or "-", job.resources, ago(job.submitted_at) if job.submitted_at else "-",
               duration(job.total_seconds(now)) if job.submitted_at else "-",
               duration(job.job_seconds(now)) if job.started_at else "-", job.recoveries, job.status]
        if args.all:
            row += [_infra(job.placement) if job.cluster else "-", job.cluster or "-", job.note or "-"]
        rows.append(row)
    print_table(headers, rows)
    return 0


def _infra(placement: dict | None) -> str:
    if not placement:
        return "-"
    return "/".join(p for p in (placement.get("cloud"), placement.get("region"), placement.get("zone")) if p)


def _json(job, now: float) -> dict:
    return {"id": job.id, "name": job.name, "status": job.status, "tasks": len(job.tasks),
            "task_index": job.task_index, "resources": job.resources, "strategy": job.strategy,
            "submitted_at": job.submitted_at, "started_at": job.started_at, "ended_at": job.ended_at,
            "total_seconds": job.total_seconds(now) if job.submitted_at else None,
            "job_seconds": job.job_seconds(now), "recoveries": job.recoveries,
            "error_restarts": job.error_restarts, "cluster": job.cluster,
            "infra": _infra(job.placement) if job.placement else None, "note": job.note}


# -- logs -------------------------------------------------------------------------------------------


def jobs_logs(args) -> int:
    """Print (and follow) a job's log, or the controller's."""
    from skyk.errors import SpecError
    from skyk.jobs import daemon, state
    from skyk.state import db

    conn = db.connect()
    _keep_controller(conn)
    if args.controller:
        if args.job_id is not None:
            raise SpecError("give a job id or --controller, not both", hint="skyk jobs logs --controller")
        return _print_file(daemon.controller_log(), None, conn)
    job_id = args.job_id
    if job_id is None:
        jobs = state.list_jobs(conn)
        if not jobs:
            raise SpecError("there are no managed jobs", hint="submit one with: skyk jobs launch TASK.yaml")
        job_id = jobs[0].id
    if state.get(conn, job_id) is None:
        raise _unknown(conn, job_id)
    if not args.follow:
        return _print_file(daemon.job_log(job_id), None, conn)
    return _follow(conn, job_id)


def _unknown(conn, job_id: int):
    from skyk.errors import SpecError
    from skyk.jobs import state

    known = [j.id for j in state.list_jobs(conn)][:10]
    return SpecError(f"no managed job {job_id}",
                     hint=f"'skyk jobs queue' lists them{f' (newest: {known[0]})' if known else ''}")


def _follow(conn, job_id: int) -> int:
    """Stream a job's log until it ends; exit 0 if it SUCCEEDED. Ctrl-C detaches."""
    from skyk.jobs import daemon, state
    from skyk.lifecycle.jobs import JobFailed
    from skyk.lifecycle.progress import say

    try:
        _print_file(daemon.job_log(job_id), job_id, conn)
    except KeyboardInterrupt:
        say(f"\nDetached from managed job {job_id}; it keeps running. Reattach with: skyk jobs logs {job_id}")
        return 0
    job = state.get(conn, job_id)
    if job.status == state.SUCCEEDED:
        say(f"✓ Managed job {job_id} SUCCEEDED")
        return 0
    raise JobFailed(f"managed job {job_id} {job.status}" + (f": {job.note}" if job.note else ""),
                   hint=f"'skyk jobs queue -a' shows it; 'skyk jobs logs {job_id} --no-follow' its output")


def _print_file(path, follow_job: int | None, conn) -> int:
    """Copy ``path`` to stdout; with ``follow_job``, keep going until that job has finished."""
    import time

    from skyk.jobs import state

    offset = 0
    while True:
        # The job's state is read before the file: what the controller wrote before it marked
        # the job finished is then read in this same round.
        finished = follow_job is None or state.get(conn, follow_job).finished
        try:
            with open(path, "rb") as file:
                file.seek(offset)
                while chunk := file.read(65536):
                    sys.stdout.buffer.write(chunk)
                    offset += len(chunk)
                sys.stdout.flush()
        except FileNotFoundError:
            pass
        if finished:
            return 0
        time.sleep(0.5)


# -- cancel -----------------------------------------------------------------------------------------


def jobs_cancel(args) -> int:
    """Ask the controller to cancel jobs; it tears their clusters down, whatever they were doing."""
    from skyk.cli.targets import confirm
    from skyk.errors import SpecError
    from skyk.jobs import daemon, state
    from skyk.lifecycle.progress import say
    from skyk.state import db

    chosen = sum(bool(x) for x in (args.job_ids, args.name, args.all))
    if chosen != 1:
        raise SpecError("give job ids, -n NAME or -a (one of them)", hint="skyk jobs cancel 3, or -a for all")
    conn = db.connect()
    if args.job_ids:
        for job_id in args.job_ids:
            if state.get(conn, job_id) is None:
                raise _unknown(conn, job_id)
        ids = list(dict.fromkeys(args.job_ids))
    else:
        ids = [j.id for j in state.list_jobs(conn, unfinished_only=True) if args.all or j.name == args.name]
        if not ids:
            say("No unfinished managed jobs" + (f" named {args.name}" if args.name else "") + " to cancel.")
            return 0
    confirm("cancel", [f"managed job {i}" for i in ids], args.yes)
    for job_id in ids:
        before = state.request_cancel(conn, job_id)
        if before in state.TERMINAL:
            say(f"Managed job {job_id} already {before}; nothing to cancel.")
        else:
            say(f"Cancelling managed job {job_id} (was {before}); the controller tears its cluster down.")
    if any(not state.get(conn, i).finished for i in ids):
        daemon.ensure_running()
    return 0
