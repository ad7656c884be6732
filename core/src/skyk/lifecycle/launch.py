"""``launch`` and ``exec``: from a task to a job running on a cluster."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

from skyk.errors import SkykError
from skyk.lifecycle import buckets, lookup, nodes
from skyk.lifecycle.control import had_agent, restart_agent, set_autostop, start_cluster, teardown
from skyk.lifecycle.jobs import follow, job_spec
from skyk.lifecycle.progress import say, step
from skyk.lifecycle.reuse import accelerator_demand, check_fits
from skyk.spec.resources import ResourceFields
from skyk.spec.task import Task
from skyk.state import clusters, db
from skyk.state.locks import cluster_lock


@dataclass(frozen=True)
class LaunchOptions:
    """How to launch: the cluster, command-line overrides and behaviour flags."""

    cluster: str
    override: ResourceFields | None = None
    flags: dict[str, str] | None = None
    detach: bool = False
    idle_minutes: float | None = None
    down: bool = False
    retry_until_up: bool = False
    #: ask before provisioning a new cluster (only when a person is at a terminal)
    confirm: bool = False
    #: places not to provision in (a managed job's recovery moving away from a preemption)
    blocked: tuple = ()
    #: the job's ``SKYK_TASK_ID`` (a managed job's, the same on each of its clusters); None: the agent's
    task_id: str | None = None


def launch(task: Task, options: LaunchOptions) -> int:
    """Provision (or reuse) the cluster, run ``setup`` then ``run`` as a job; return the exit code."""
    if task.pool is not None:
        raise SkykError(f"{task.source}: pool: worker pools are not supported yet",
                        hint="'skyk launch --dryrun' plans one worker; launch workers as clusters"
                             " with 'skyk launch -c NAME' (without pool:)")
    conn = db.connect()
    name = options.cluster
    idle, down = _autostop_wanted(task, options)
    with cluster_lock(name):
        record = clusters.get(conn, name)
        if record is not None and record.status == clusters.UP:
            handle = record.handle
            check_fits(task, options.override, options.flags, handle)
            say(f"Reusing cluster {name} on {handle.infra}")
            mounts = _check_mounts(task, handle.cloud)
            client = lookup.head_client(handle)
        elif record is not None and record.status == clusters.STOPPED:
            check_fits(task, options.override, options.flags, record.handle)
            mounts = _check_mounts(task, record.handle.cloud)
            handle, client = start_cluster(conn, record)
        elif record is not None and had_agent(record):
            # Its agent died (killed?): restart it, as 'start' would, and keep
            # the nodes and their files rather than tear them down.
            check_fits(task, options.override, options.flags, record.handle)
            mounts = _check_mounts(task, record.handle.cloud)
            handle, client = restart_agent(conn, record)
        else:
            if record is not None:
                with step(f"Cleaning up the unfinished cluster {name}"):
                    teardown(conn, record)
            handle, client, mounts = _provision(conn, task, options, idle, down)
        _put_files(conn, handle, task, mounts)
        if idle is not None:
            set_autostop(conn, handle, client, idle, down)
        clusters.set_status(conn, name, clusters.UP)
        gpus = accelerator_demand(task, options.override, options.flags, handle)
        job_id = _submit(client, name, task, with_setup=True, gpus=gpus, task_id=options.task_id)
    # Outside the lock: following a log must not keep 'down' or 'stop' waiting.
    return _follow_or_detach(client, name, job_id, options.detach)


def _check_mounts(task: Task, cloud: str) -> list:
    """The task's bucket mounts on ``cloud``; ``SkykError`` for any mount that cannot be made there."""
    nodes.check_mounts(task, cloud)
    return buckets.plan(task, cloud)


def _put_files(conn, handle, task: Task, mounts: list) -> None:
    """Copy the workdir and local file mounts to the nodes, then mount (or copy) the buckets."""
    if task.workdir or task.file_mounts:
        with step("Syncing workdir and file mounts"):
            nodes.sync_files(handle, task)
    if mounts:
        with step(f"Mounting {len(mounts)} bucket(s) on {len(handle.nodes)} node(s)"):
            buckets.attach(conn, handle, mounts)


def _autostop_wanted(task: Task, options: LaunchOptions) -> tuple[float | None, bool]:
    """The autostop a launch sets: idle minutes (None: none) and whether it tears down."""
    idle, down = options.idle_minutes, options.down
    if down and idle is None:
        idle = 0.0  # --down alone: tear down as soon as the jobs are done
    if idle is None and task.resources.autostop is not None:
        idle, down = task.resources.autostop.idle_minutes, task.resources.autostop.down
    return idle, down


def _autostop_capable(planned, down: bool):
    """``planned`` without the places whose cloud cannot autostop (or tear down) its nodes.

    Checked before anything is provisioned: otherwise the nodes would come up and
    stay up without the autostop asked for.
    """
    import dataclasses

    clouds = planned.kernel.clouds()
    refusals = {c.offering.cloud: clouds[c.offering.cloud].autostop_refusal(down, c.use_spot)
                for c in planned.plan.candidates}
    kept = tuple(c for c in planned.plan.candidates if refusals[c.offering.cloud] is None)
    if not kept:
        reasons = "; ".join(sorted({f"{cloud}: {why}" for cloud, why in refusals.items() if why}))
        raise SkykError(f"{planned.task.source}: no place it can run can {'tear down' if down else 'stop'}"
                        f" itself when idle ({reasons})",
                        hint="launch without -i/--down (or autostop:) and stop it with 'skyk stop',"
                             " or allow another cloud")
    return dataclasses.replace(planned, plan=dataclasses.replace(planned.plan, candidates=kept))


def _provision(conn, task: Task, options: LaunchOptions, idle: float | None = None, down: bool = False):
    from skyk.optimizer.planner import plan_task
    from skyk.provision.failover import ProvisionFailed, provision_with_failover

    # Only clouds with credentials: trying the others could only fail.
    planned = plan_task(task, options.override, blocked=options.blocked, flags=options.flags,
                        enabled_only=True)
    if idle is not None:
        planned = _autostop_capable(planned, down)
    for cloud_name in {c.offering.cloud for c in planned.plan.candidates}:
        nodes.check_mounts(task, cloud_name)
    name = options.cluster
    best = planned.plan.best
    # Checked before any node exists. A storage object that names no store
    # keeps its bucket in the store of the cloud planned first.
    mounts = buckets.plan(task, best.offering.cloud)
    if planned.sizing is not None:
        say(f"Model {planned.sizing.estimate.model}: {planned.sizing.estimate.describe()}")
    say(f"Best of {planned.plan.considered} candidates: {best.offering.instance_type} on"
        f" {best.offering.infra} at ${best.hourly_cost:.2f}/h")
    if options.confirm and sys.stdin.isatty():
        answer = input(f"Launch a new cluster {name}? [Y/n] ").strip().lower()
        if answer not in ("", "y", "yes"):
            raise SkykError("launch cancelled; nothing was provisioned", hint="add -y to skip this question")
    clusters.begin_launch(conn, name, os.getpid())
    try:
        handle = provision_with_failover(
            planned, name, retry_until_up=options.retry_until_up, progress=say,
            on_handle=lambda h: _record_handle(name, h),
            on_attempt=lambda a: clusters.record_attempt(conn, a),
            on_settled=lambda a: clusters.forget_attempt(conn, a))
    except BaseException as exc:
        record = clusters.get(conn, name)
        if record is not None and (record.handle is None or isinstance(exc, ProvisionFailed)):
            _abandon(conn, name)
        raise
    clusters.set_handle(conn, name, handle)
    cloud = planned.kernel.clouds()[handle.cloud]
    try:
        with step(f"Starting the node agent on {len(handle.nodes)} node(s)"):
            client = nodes.start_agent(handle, cloud)
    except Exception as exc:
        clusters.set_status(conn, name, clusters.INIT, note=f"agent did not start: {exc}")
        raise SkykError(f"cluster {name}: the node agent did not start: {exc}",
                        hint=f"'skyk down {name}' cleans up; 'skyk status -r {name}' checks it") from None
    return handle, client, mounts


def _record_handle(name: str, handle) -> None:
    """Record the nodes an attempt made, from its provisioning thread (with a connection of its own)."""
    with contextlib.closing(db.connect()) as conn:
        clusters.set_handle(conn, name, handle)


def _abandon(conn, name: str) -> None:
    """Forget a launch that made no usable node, unless one of its attempts may still make some.

    An attempt that timed out, or did not stop within moments of Ctrl-C, may
    be creating nodes until this process exits: its record stays, so
    'skyk status -r' shows and 'skyk down' removes what it made.
    """
    unsettled = clusters.attempts(conn, name)
    if not unsettled:
        clusters.remove(conn, name)
        return
    places = ", ".join(sorted({a.infra for a in unsettled}))
    clusters.set_status(conn, name, clusters.INIT, note=f"launch stopped while provisioning on {places}"
                        f" had not finished; 'skyk down {name}' removes what it made")


def _submit(client, name: str, task: Task, with_setup: bool, gpus: float | None,
            task_id: str | None = None) -> int | None:
    if not (task.run or (with_setup and task.setup)):
        say(f"✓ Cluster {name} is UP (the task has no run command)")
        return None
    return client.submit(job_spec(task, with_setup, gpus, task_id))


def _follow_or_detach(client, name: str, job_id: int | None, detach: bool) -> int:
    if job_id is None:
        return 0
    if detach:
        say(f"✓ Job {job_id} submitted to cluster {name}. Follow it with: skyk logs {name} {job_id}")
        return 0
    say(f"✓ Job {job_id} submitted to cluster {name}; streaming its output (Ctrl-C detaches)")
    return follow(client, name, job_id)


def execute(task: Task, cluster: str, detach: bool) -> int:
    """Run ``task``'s ``run`` on an UP cluster, without provisioning or ``setup``."""
    conn = db.connect()
    _, handle = lookup.require_up(conn, cluster)
    if task.num_nodes > len(handle.nodes):
        raise SkykError(f"the task needs {task.num_nodes} nodes but cluster {cluster} has {len(handle.nodes)}",
                        hint="launch a bigger cluster with skyk launch --num-nodes")
    _put_files(conn, handle, task, _check_mounts(task, handle.cloud))
    client = lookup.head_client(handle)
    gpus = accelerator_demand(task, None, None, handle)
    return _follow_or_detach(client, cluster, _submit(client, cluster, task, with_setup=False, gpus=gpus),
                             detach)
