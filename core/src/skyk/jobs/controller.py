"""The jobs controller: one background process that sees every managed job through.

Everything it knows is in the state database, so a controller killed at any
moment and started again resumes each job where it was: a RUNNING job's
agent is asked again, a launch that was cut short is torn down and made
again, and no job ever runs twice at once. Its clusters are owned by their
job (hidden from ``status`` and ``down -a``) and carry an autodown failsafe,
so they go away even if no controller ever comes back.

Each tick it starts the launches of PENDING jobs, asks the agents of
RUNNING jobs how their job is doing (copying new log output as it goes),
and reacts: the next task of a pipeline, a recovery after a preemption or
a lost node, a restart after an error, or the end. Slow work (launches,
teardowns, agent calls) runs in thread pools, so one slow cloud never holds
up the other jobs.

Run as ``python -m skyk.jobs.controller``; :mod:`skyk.jobs.daemon` starts it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from skyk.envvars import seconds
from skyk.jobs import daemon, state
from skyk.jobs.recovery import Placement, Relaunch
from skyk.lifecycle.owned import cluster_gone, down_cluster
from skyk.state import clusters, db

#: seconds between ticks
TICK = 0.5
#: launches and teardowns at once (each a thread; provisioning mostly waits on clouds)
LAUNCHERS = 8
#: agent calls at once (each a process on this machine)
CHECKERS = 4
#: seconds one agent call may take before it counts as unanswered
AGENT_TIMEOUT = 30.0
#: seconds a controller with nothing to do stays up before it exits
IDLE_EXIT = 30.0


def check_every() -> float:
    """Seconds between asking a RUNNING job's agent about it (``SKYK_JOBS_CHECK_SECONDS``, default 2)."""
    return seconds("SKYK_JOBS_CHECK_SECONDS", 2.0)


def unreachable_limit() -> float:
    """Seconds an agent may stay unreachable before its node counts as lost (``SKYK_JOBS_UNREACHABLE_SECONDS``).

    Default 120: a network blip or a busy node is not a preemption, but a
    node whose processes are gone never answers again.
    """
    return seconds("SKYK_JOBS_UNREACHABLE_SECONDS", 120.0)


def no_resource_budget() -> float:
    """Seconds a job may wait for any place to take it before FAILED_NO_RESOURCE (``SKYK_JOBS_NO_RESOURCE_SECONDS``, default 1800)."""
    return seconds("SKYK_JOBS_NO_RESOURCE_SECONDS", 1800.0)


def retry_backoff() -> float:
    """First wait between rounds of relaunches when no place took the job (``SKYK_JOBS_RETRY_SECONDS``, default 20; doubles to 300)."""
    return seconds("SKYK_JOBS_RETRY_SECONDS", 20.0)


def failsafe_minutes() -> float:
    """Idle minutes after which a job's cluster tears itself down if no controller did (``SKYK_JOBS_FAILSAFE_MINUTES``, default 10)."""
    return seconds("SKYK_JOBS_FAILSAFE_MINUTES", 10.0)


def check_settings() -> None:
    """Read every ``SKYK_JOBS_*`` setting once, so a bad value fails ``jobs launch``, not the controller."""
    for setting in (check_every, unreachable_limit, no_resource_budget, retry_backoff, failsafe_minutes):
        setting()


def log(message: str) -> None:
    """One line in the controller's log (its stdout)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def cluster_name(job_id: int, task_index: int) -> str:
    """The cluster a job's task runs on (the same name for each of its attempts)."""
    return f"skyk-jobs-{job_id}" + (f"-{task_index}" if task_index else "")


def task_id(job: state.JobRecord) -> str:
    """``SKYK_TASK_ID`` of a job's current task: the same across its recoveries, so it can resume."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(job.submitted_at))
    return f"skyk-managed-{stamp}_{job.id}_{job.task_index}"


class NoPlace(Exception):
    """No place could take the job on this try (nothing provisioned, or every place failed)."""


class Controller:
    """Sees every unfinished managed job through, one tick at a time."""

    def __init__(self) -> None:
        self.conn = db.connect()
        self.launchers = ThreadPoolExecutor(max_workers=LAUNCHERS)
        self.checkers = ThreadPoolExecutor(max_workers=CHECKERS)
        self.lock = threading.Lock()
        self.busy: set[int] = set()  # jobs a worker thread is acting on
        self.checked_at: dict[int, float] = {}

    # ------------------------------------------------------------------ tick

    def tick(self) -> int:
        """Start the work each unfinished job needs; return how many jobs are unfinished."""
        jobs = state.list_jobs(self.conn, unfinished_only=True)
        now = time.monotonic()
        for job in jobs:
            if job.id in self.busy:
                continue
            if job.cancel_requested:
                self._submit(self.launchers, job, self.cancel)
            elif job.status in (state.PENDING, state.STARTING, state.RECOVERING):
                # STARTING or RECOVERING with no worker on it: a previous controller was cut short.
                self._submit(self.launchers, job, self.place)
            elif job.status == state.RUNNING and now - self.checked_at.get(job.id, 0.0) >= check_every():
                self.checked_at[job.id] = now
                self._submit(self.checkers, job, self.check)
        self.checked_at = {i: t for i, t in self.checked_at.items() if any(j.id == i for j in jobs)}
        return len(jobs)

    def _submit(self, pool: ThreadPoolExecutor, job: state.JobRecord, work) -> None:
        with self.lock:
            self.busy.add(job.id)
        pool.submit(self._run, job, work)

    def _run(self, job: state.JobRecord, work) -> None:
        conn = db.connect()
        try:
            work(conn, job)
        except Exception:  # noqa: BLE001 - one job's trouble must not stop the others
            log(f"job {job.id}: unexpected error:\n{traceback.format_exc()}")
            _fail_controller(conn, job)
        finally:
            conn.close()
            with self.lock:
                self.busy.discard(job.id)

    # ------------------------------------------------------------- launching

    def place(self, conn, job: state.JobRecord) -> None:
        """Get the job's current task running on a cluster of its own, as its strategy says."""
        if job.cluster and clusters.get(conn, job.cluster) is not None:
            # A cut-short launch, or the nodes a recovery is leaving: never two clusters at once.
            _say(job, f"tearing down {job.cluster}")
            down_cluster(conn, job.cluster)
        recovering = job.status == state.RECOVERING
        relaunches = [Relaunch()]
        if recovering and job.lost:
            relaunches = _strategy(job).relaunches(Placement(**job.lost))
        if not recovering:
            state.update(conn, job.id, status=state.STARTING)
        cluster = cluster_name(job.id, job.task_index)
        state.update(conn, job.id, cluster=cluster)
        delay = retry_backoff()
        while True:
            for relaunch in relaunches:
                if _cancelled(conn, job.id):
                    return
                try:
                    self._launch(conn, job, cluster, relaunch)
                    return
                except NoPlace as exc:
                    _say(job, f"no place {relaunch.describe()}: {exc}")
            fresh = state.get(conn, job.id)
            waiting_since = fresh.waiting_since or time.time()
            state.update(conn, job.id, waiting_since=waiting_since)
            if time.time() - waiting_since >= no_resource_budget():
                why = f"no place could take it for {no_resource_budget():g}s"
                _say(job, why)
                state.update(conn, job.id, status=state.FAILED_NO_RESOURCE, cluster=None, note=why)
                return
            _say(job, f"retrying in {delay:g}s")
            if _sleep_unless_cancelled(conn, job.id, delay):
                return
            delay = min(delay * 2, 300.0)

    def _launch(self, conn, job: state.JobRecord, cluster: str, relaunch: Relaunch) -> None:
        """Launch the current task on ``cluster`` as ``relaunch`` says; RUNNING once its job is submitted."""
        from skyk.errors import NoFeasibleResources, SkykError
        from skyk.lifecycle.launch import LaunchOptions, launch
        from skyk.lifecycle.lookup import head_client
        from skyk.provision.failover import ProvisionFailed

        job = state.get(conn, job.id)
        task = _task(job)
        attempt = job.attempt + 1
        state.update(conn, job.id, attempt=attempt)
        _log_header(job, attempt, relaunch)
        _say(job, f"launching {cluster} for task {job.task_index + 1}/{len(job.tasks)}, attempt {attempt},"
                  f" {relaunch.describe()}")
        try:
            launch(task, LaunchOptions(cluster, override=_override(job, relaunch), detach=True,
                                       blocked=relaunch.blocked, task_id=task_id(job)))
        except (ProvisionFailed, NoFeasibleResources) as exc:
            if clusters.get(conn, cluster) is not None:
                down_cluster(conn, cluster)
            raise NoPlace(exc.one_line()) from None
        except SkykError as exc:
            if clusters.get(conn, cluster) is not None:
                down_cluster(conn, cluster)
            if relaunch != Relaunch():
                raise NoPlace(exc.one_line()) from None
            _say(job, f"FAILED_PRECHECKS: {exc.one_line()}")
            state.update(conn, job.id, status=state.FAILED_PRECHECKS, cluster=None, note=exc.one_line()[:500])
            return
        record = clusters.get(conn, cluster)
        handle = record.handle
        client = head_client(handle, timeout=AGENT_TIMEOUT)
        agent_job = max(j["id"] for j in client.queue())
        _failsafe(conn, handle, client)
        now = time.time()
        placement = {"cloud": handle.cloud, "region": handle.region, "zone": handle.zone}
        taken = state.update(conn, job.id, status=state.RUNNING, agent_job=agent_job, placement=placement,
                             lost=None, run_since=now, started_at=job.started_at or now, log_offset=0,
                             waiting_since=None, unreachable_since=None, note=None)
        if taken:
            _say(job, f"RUNNING on {handle.infra} (agent job {agent_job})")
        # Cancelled meanwhile: the next tick tears the cluster down.

    # -------------------------------------------------------------- watching

    def check(self, conn, job: state.JobRecord) -> None:
        """Ask a RUNNING job's agent how it is doing; copy new log output; act on the answer."""
        from skyk.errors import SkykError
        from skyk.lifecycle.lookup import head_client

        record = clusters.get(conn, job.cluster) if job.cluster else None
        if record is None or record.handle is None or job.agent_job is None:
            self._lost(conn, job, "its cluster is gone")
            return
        client = head_client(record.handle, timeout=AGENT_TIMEOUT)
        try:
            info = _pull_log(conn, job, client)
        except SkykError as exc:
            gone = cluster_gone(conn, job.cluster)
            if gone:
                self._lost(conn, job, gone)
                return
            since = job.unreachable_since or time.time()
            if time.time() - since >= unreachable_limit():
                self._lost(conn, job, f"its agent has not answered for {unreachable_limit():g}s"
                                      f" ({exc.one_line()}): the node is lost")
                return
            if job.unreachable_since is None:
                _say(job, f"agent not answering ({exc.one_line()}); trying again")
            state.update(conn, job.id, unreachable_since=since)
            return
        if job.unreachable_since is not None:
            state.update(conn, job.id, unreachable_since=None)
        status = info["status"]
        if status == "SUCCEEDED":
            self._task_succeeded(conn, job)
        elif status == "FAILED_SETUP":
            self._end(conn, job, state.FAILED_SETUP, "its setup failed")
        elif status == "FAILED":
            self._task_failed(conn, job, info.get("exit_code"))
        elif status == "CANCELLED":
            self._end(conn, job, state.CANCELLED, "its job was cancelled on the cluster")

    def _lost(self, conn, job: state.JobRecord, why: str) -> None:
        """The job's nodes were taken away (or its node died): recover it as its strategy says."""
        _say(job, f"RECOVERING: {why}")
        self._recover(conn, job, why, lost=job.placement)

    def _recover(self, conn, job: state.JobRecord, why: str, lost: dict | None) -> None:
        now = time.time()
        state.update(conn, job.id, status=state.RECOVERING, recoveries=job.recoveries + 1, lost=lost,
                     run_seconds=job.job_seconds(now), run_since=None, unreachable_since=None,
                     note=why[:500])
        # The next tick's worker tears the old cluster down and places the job again.

    def _task_succeeded(self, conn, job: state.JobRecord) -> None:
        down_cluster(conn, job.cluster)
        if job.task_index + 1 < len(job.tasks):
            _say(job, f"task {job.task_index + 1}/{len(job.tasks)} SUCCEEDED; starting the next")
            state.update(conn, job.id, status=state.STARTING, task_index=job.task_index + 1, cluster=None,
                         agent_job=None, run_seconds=job.job_seconds(time.time()), run_since=None)
            return
        self._end(conn, job, state.SUCCEEDED, None, torn_down=True)

    def _task_failed(self, conn, job: state.JobRecord, code: int | None) -> None:
        spec = _task(job).resources.job_recovery
        codes = spec.recover_on_exit_codes if spec else ()
        most = spec.max_restarts_on_errors if spec else 0
        if code is not None and code in codes:
            why = f"exit code {code} is in recover_on_exit_codes"
        elif job.error_restarts < most:
            state.update(conn, job.id, error_restarts=job.error_restarts + 1)
            why = f"failed with exit code {code}; restart {job.error_restarts + 1} of {most}"
        else:
            self._end(conn, job, state.FAILED, f"exit code {code}" if code is not None else "it failed")
            return
        _say(job, f"RECOVERING: {why}")
        self._recover(conn, job, why, lost=None)

    def _end(self, conn, job: state.JobRecord, status: str, why: str | None, torn_down: bool = False) -> None:
        if not torn_down and job.cluster:
            down_cluster(conn, job.cluster)
        state.update(conn, job.id, status=status, cluster=None, run_seconds=job.job_seconds(time.time()),
                     run_since=None, note=why)
        _say(job, status + (f": {why}" if why else ""))

    # ------------------------------------------------------------ cancelling

    def cancel(self, conn, job: state.JobRecord) -> None:
        """Tear the job's cluster down (whatever it was doing) and mark it CANCELLED."""
        if job.cluster and clusters.get(conn, job.cluster) is not None:
            _say(job, f"cancelling: tearing down {job.cluster}")
            down_cluster(conn, job.cluster)
        state.update(conn, job.id, status=state.CANCELLED, cluster=None,
                     run_seconds=job.job_seconds(time.time()), run_since=None)
        _say(job, "CANCELLED")


# -- helpers ----------------------------------------------------------------------------------------


def _task(job: state.JobRecord):
    """The job's current task."""
    from skyk.spec.task import task_from_mapping

    return task_from_mapping(job.tasks[job.task_index], f"<managed job {job.id}, task {job.task_index + 1}>")


def _override(job: state.JobRecord, relaunch: Relaunch):
    """The job's resource flags, with the relaunch's region pin on top."""
    from skyk.spec.resources import ResourceFields

    fields = dict(job.override)
    if relaunch.infra:
        for key in ("cloud", "region", "zone", "infra"):
            fields.pop(key, None)
        fields["infra"] = relaunch.infra
    return ResourceFields.model_validate(fields) if fields else None


def _strategy(job: state.JobRecord):
    from skyk.jobs.recovery import DEFAULT_STRATEGY
    from skyk.plugins.manager import Kernel

    known = Kernel.load(("policy",)).recovery_strategies()
    if job.strategy not in known:
        # Checked at submission; its plugin was uninstalled since.
        log(f"job {job.id}: recovery strategy {job.strategy} is not installed; using {DEFAULT_STRATEGY}")
    return known.get(job.strategy) or known[DEFAULT_STRATEGY]


def _failsafe(conn, handle, client) -> None:
    """Have the cluster tear itself down once idle, in case no controller is left to do it."""
    from skyk.errors import SkykError
    from skyk.lifecycle.control import set_autostop

    try:
        set_autostop(conn, handle, client, failsafe_minutes(), True)
    except SkykError as exc:
        log(f"cluster {handle.cluster}: no autodown failsafe ({exc.one_line()})")


def _pull_log(conn, job: state.JobRecord, client) -> dict:
    """Ask the agent about the job and append its new log output to the job's log; return the job.

    ``SkykError`` when the agent cannot be asked, or answers without its daemon running: then
    nothing on the node makes progress, as when the node's processes are gone.
    """
    from skyk.errors import SkykError
    from skyk.lifecycle.jobs import DONE

    offset = job.log_offset
    while True:
        info, chunk, daemon_alive = client.job_progress(job.agent_job, offset, timeout=AGENT_TIMEOUT)
        if chunk:
            with open(daemon.job_log(job.id), "ab") as out:
                out.write(chunk)
            offset += len(chunk)
            state.update(conn, job.id, log_offset=offset)
        # A full chunk may have more behind it; a finished job's log must be copied whole.
        if len(chunk) < (1 << 20):
            if not daemon_alive and info["status"] not in DONE:
                raise SkykError(f"cluster {job.cluster}: the node's agent daemon is not running")
            return info


def _log_header(job: state.JobRecord, attempt: int, relaunch: Relaunch) -> None:
    line = (f"\n=== skyk: task {job.task_index + 1}/{len(job.tasks)}, attempt {attempt}"
            f" ({relaunch.describe()}) ===\n")
    with open(daemon.job_log(job.id), "ab") as out:
        out.write(line.encode())


def _say(job: state.JobRecord, message: str) -> None:
    log(f"job {job.id}: {message}")


def _cancelled(conn, job_id: int) -> bool:
    record = state.get(conn, job_id)
    return record is None or record.cancel_requested


def _sleep_unless_cancelled(conn, job_id: int, delay: float) -> bool:
    """Wait ``delay`` seconds; True as soon as the job is cancelled."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if _cancelled(conn, job_id):
            return True
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return False


def _fail_controller(conn, job: state.JobRecord) -> None:
    """A job the controller cannot handle ends FAILED_CONTROLLER, its cluster torn down."""
    try:
        if job.cluster:
            down_cluster(conn, job.cluster)
    finally:
        state.update(conn, job.id, status=state.FAILED_CONTROLLER, cluster=None,
                     note="the controller failed on it; see 'skyk jobs logs --controller'")


def main() -> int:
    """Run the controller until no job is left to see through."""
    fd = daemon.hold_lock()
    if fd is None:
        return 0  # another controller runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    controller = Controller()
    log(f"jobs controller up (pid {os.getpid()})")
    idle_since = None
    while True:
        try:
            unfinished = controller.tick()
        except Exception:  # noqa: BLE001 - one bad tick must not stop the controller
            log("tick failed:\n" + traceback.format_exc())
            unfinished = 1
        if unfinished or controller.busy:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_EXIT:
            # Let go of the lock, then look once more: a job submitted while this one was
            # deciding to exit saw a controller running, and must not be stranded.
            os.close(fd)
            if not state.list_jobs(controller.conn, unfinished_only=True):
                log("no unfinished jobs; exiting")
                return 0
            fd = daemon.hold_lock()
            if fd is None:
                return 0  # a new controller took over
            idle_since = None
        time.sleep(TICK)


if __name__ == "__main__":
    sys.exit(main())
