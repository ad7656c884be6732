"""The job driver: runs one job's setup and run on every node, and stops jobs.

The daemon starts one driver process per job (``python -m skyk_agent driver
--job ID``) in a session of its own, so a cancel can kill it without
touching the daemon. The driver reaches every node, the head included,
through that node's runner from ``cluster.json``, starts the ``part``
command there and copies what the parts print into the job's log.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from . import jobs, layout, part, procs
from .runners import CommandRunner, RunnerError, runner_from_spec

#: how long a part may take to end after kill-part before its local end is killed
_KILL_SETTLE_SECONDS = 10.0
#: timeout of one remote kill-part
_REMOTE_KILL_TIMEOUT = 60.0


class _Log:
    """The job's log: what every part prints, as it arrives, prefixed by node when there are several."""

    def __init__(self, path: Path, multi_node: bool):
        # Unbuffered: a line is in the file (and in ``logs --follow``) as soon as it is read.
        self._file = open(path, "ab", buffering=0)
        self._lock = threading.Lock()
        self.multi_node = multi_node

    def write(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view):]

    def note(self, message: str) -> None:
        """Write one line of the agent's own (a node could not be reached, ...)."""
        self.write(f"skyk: {message}\n".encode())

    def pump(self, rank: int, stream) -> None:
        """Copy ``stream`` (a part's output) into the log until it ends."""
        if not self.multi_node:
            # Raw chunks: a prompt or progress bar without a newline shows up too.
            fd = stream.fileno()
            while chunk := os.read(fd, 65536):
                self.write(chunk)
            return
        prefix = f"({part.node_name(rank)}, rank={rank}) ".encode()
        for line in iter(stream.readline, b""):
            self.write(prefix + (line if line.endswith(b"\n") else line + b"\n"))

    def close(self) -> None:
        self._file.close()


def _exit_code(returncode: int) -> int:
    # A part killed by a signal reads like bash's own convention.
    return 128 - returncode if returncode < 0 else returncode


def parallel(work: Iterable[Callable[[], object]]) -> list[BaseException | None]:
    """Run each callable in its own thread; return the exception each raised (or None)."""
    work = list(work)
    errors: list[BaseException | None] = [None] * len(work)

    def call(i: int, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # reported to the caller
            errors[i] = exc

    threads = [threading.Thread(target=call, args=(i, fn), daemon=True) for i, fn in enumerate(work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def runners_of(info: dict) -> list[CommandRunner]:
    """Return the runner of every node in ``cluster.json``, head first."""
    specs = info.get("runners") or []
    if not specs:
        raise RunnerError("cluster.json lists no runners")
    return [runner_from_spec(s) for s in specs]


def kill_parts(runners: list[CommandRunner], job_id: int, ranks: Iterable[int]) -> None:
    """Run ``kill-part`` for job ``job_id`` on nodes ``ranks``, in parallel, and wait for it.

    The head (rank 0) is this machine, so its parts are killed in-process.
    Where the agent never reached a worker, the fallback still leaves the
    ``cancelled`` marker, so a part that starts late runs nothing.
    """
    def remote(runner: CommandRunner) -> Callable[[], None]:
        marker = f"~/.skyk/jobs/{int(job_id)}"
        command = (layout.agent_command(runner.python, f"kill-part --job {int(job_id)}")
                   + f" 2>/dev/null || {{ umask 077 && mkdir -p {marker} && : > {marker}/cancelled; }}")
        return lambda: runner.run(command, timeout=_REMOTE_KILL_TIMEOUT)

    work = [(lambda: part.kill(job_id)) if rank == 0 else remote(runners[rank])
            for rank in ranks if rank < len(runners)]
    for error in parallel(work):
        if error is not None:
            print(f"skyk-agent: kill-part of job {job_id}: {error}", file=sys.stderr, flush=True)


def is_driver(pid: int | None, boot: str | None, job_id: int) -> bool:
    """Whether ``pid`` is still the driver of job ``job_id`` (not a reused pid)."""
    if not pid:
        return False
    current = layout.boot_id()
    if boot and current and boot != current:
        return False
    argv = procs.cmdline(pid)
    if argv is None or not procs.pid_alive(pid):
        return False
    return "driver" in argv and str(job_id) in argv


def kill_job(job: jobs.Job, info: dict | None) -> None:
    """Stop a job that was running: its driver first (so it starts no more parts), then its parts."""
    if is_driver(job.driver_pid, job.driver_boot, job.id):
        # The driver leads its own session; its group holds any ssh clients too.
        procs.kill_group(job.driver_pid, grace=2.0)
    if info is None:
        part.kill(job.id)
        return
    try:
        runners = runners_of(info)
    except (RunnerError, KeyError, TypeError) as exc:
        print(f"skyk-agent: stopping job {job.id}: {exc}", file=sys.stderr, flush=True)
        part.kill(job.id)
        return
    kill_parts(runners, job.id, range(len(runners)))


def load_cluster_info() -> dict | None:
    """Return ``cluster.json`` (None if the CLI has not written it)."""
    try:
        return layout.read_json(layout.cluster_file())
    except FileNotFoundError:
        return None


def _stage(job_id: int):
    """Lay out what a worker needs, relative to its home: the agent and the job's files."""
    import shutil  # only multi-node jobs pay for these imports
    import tempfile

    staging = tempfile.TemporaryDirectory(prefix="skyk-stage-")
    root = Path(staging.name)
    package = Path(__file__).resolve().parent
    shutil.copytree(package, root / ".skyk" / "agent" / layout.NODE_PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    target = root / ".skyk" / "jobs" / str(job_id)
    target.mkdir(parents=True)
    # The worker's tar gives its directories these modes: private, as on the head.
    for directory in (target, target.parent, target.parent.parent):
        directory.chmod(0o700)
    for name in ("spec.json", "env.json", "context.json"):
        shutil.copy2(layout.job_dir(job_id) / name, target / name)  # keeps env.json at 0600
    return staging


class _Driver:
    def __init__(self, conn, job: jobs.Job, info: dict):
        self.conn = conn
        self.job = job
        self.info = info
        self.runners = runners_of(info)
        self.log = _Log(layout.log_file(job.id), multi_node=len(self.runners) > 1)

    def still_active(self) -> bool:
        return jobs.get(self.conn, self.job.id).status in jobs.ACTIVE

    def push(self) -> bool:
        """Copy the agent and the job's files to every worker; False (logged) if one failed."""
        staging = _stage(self.job.id)
        try:
            errors = parallel([(lambda r=r: r.put(staging.name, "~")) for r in self.runners[1:]])
        finally:
            staging.cleanup()
        failed = [(rank, e) for rank, e in enumerate(errors, start=1) if e is not None]
        for rank, error in failed:
            self.log.note(f"cannot reach {part.node_name(rank)} (rank={rank}): {error}")
        return not failed

    def phase(self, phase: str) -> int:
        """Run ``phase`` on every node; return 0 or the first failing exit code."""
        job_id = self.job.id
        results: queue.Queue[tuple[int, int]] = queue.Queue()
        running: dict[int, subprocess.Popen] = {}

        def watch(rank: int, proc: subprocess.Popen) -> None:
            try:
                self.log.pump(rank, proc.stdout)
            finally:
                results.put((rank, _exit_code(proc.wait())))

        threads = []
        for rank, runner in enumerate(self.runners):
            command = layout.agent_command(
                runner.python, f"part --job {job_id} --rank {rank} --phase {phase}")
            try:
                proc = runner.popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            except OSError as exc:
                self.log.note(f"cannot start {phase} on {part.node_name(rank)} (rank={rank}): {exc}")
                results.put((rank, 127))
                continue
            running[rank] = proc
            thread = threading.Thread(target=watch, args=(rank, proc), daemon=True)
            thread.start()
            threads.append(thread)

        first_failure = 0
        done: set[int] = set()
        killer: threading.Thread | None = None
        while len(done) < len(self.runners):
            try:
                rank, code = results.get(timeout=_KILL_SETTLE_SECONDS if killer else None)
            except queue.Empty:
                # kill-part did not end some part (unreachable node?): drop our end of it.
                for r, proc in running.items():
                    if r not in done:
                        proc.kill()
                continue
            done.add(rank)
            if code != 0 and not first_failure:
                first_failure = code
                others = [r for r in range(len(self.runners)) if r not in done]
                if others:
                    killer = threading.Thread(target=kill_parts, args=(self.runners, job_id, others),
                                              daemon=True)
                    killer.start()
        for thread in threads:
            thread.join()
        if killer:
            killer.join()
        return first_failure

    def run(self) -> None:
        job, spec = self.job, layout.read_json(layout.job_dir(self.job.id) / "spec.json")
        if len(self.runners) > 1 and not self.push():
            jobs.finish(self.conn, job.id, jobs.FAILED_SETUP if spec.get("setup") else jobs.FAILED, None)
            return
        if spec.get("setup"):
            if not self.still_active():
                return
            code = self.phase("setup")
            if code:
                jobs.finish(self.conn, job.id, jobs.FAILED_SETUP, code)
                return
            if not jobs.advance(self.conn, job.id, jobs.SETTING_UP, jobs.RUNNING):
                return  # cancelled meanwhile
        if spec.get("run"):
            if not self.still_active():
                return
            code = self.phase("run")
            jobs.finish(self.conn, job.id, jobs.FAILED if code else jobs.SUCCEEDED, code)
        else:
            jobs.finish(self.conn, job.id, jobs.SUCCEEDED, 0)


def main(job_id: int) -> int:
    """Drive job ``job_id`` to its end; return the process's exit code."""
    conn = jobs.connect()
    job = jobs.get(conn, job_id)
    if job.status not in jobs.ACTIVE:
        return 0  # cancelled before we got going
    driver = None
    try:
        info = load_cluster_info()
        if info is None:
            raise RunnerError(f"{layout.cluster_file()} is missing; the CLI writes it before 'start'")
        given = layout.read_json(layout.job_dir(job_id) / "spec.json").get("task_id")
        layout.write_json(layout.job_dir(job_id) / "context.json",
                          part.context(info, job_id, job.submitted_at, given))
        driver = _Driver(conn, job, info)
        driver.run()
    except Exception as exc:
        import traceback

        traceback.print_exc()
        try:
            with open(layout.log_file(job_id), "ab") as log:
                log.write(f"skyk: the job driver failed: {exc}\n".encode())
        except OSError:
            pass
        jobs.finish(conn, job_id, jobs.FAILED, None)
        return 1
    finally:
        if driver is not None:
            driver.log.close()
    return 0
