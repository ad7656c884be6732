"""The agent daemon: starts queued jobs in order and stops the cluster when idle.

Jobs run side by side when their accelerator requests fit the node together
(see :mod:`.sharing`); otherwise one at a time.

One daemon per head node. It holds an exclusive ``flock`` on
``~/.skyk/agent.lock`` for as long as it lives, so "is the daemon up?" never
trusts a pid file that may name a recycled pid. It sleeps in ``select`` on
a named pipe (``submit`` writes a byte there) and on Python's signal wake-up
pipe (SIGCHLD when a driver ends, SIGTERM to stop), with a one-second
fallback tick that also drives autostop; when idle it costs a few small
SQLite reads a second.

The driver module is imported lazily: ``submit`` imports this module for
:func:`wake`, and what it loads adds to every job's start-up delay.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback

from . import jobs, layout, part, procs, sharing
from .runners import NODE_MARKER

#: the fallback tick: a lost wake-up costs at most this much, and autostop fires this late at most
POLL_SECONDS = 1.0
#: how long after a failed autostop command it is tried again
AUTOSTOP_RETRY_SECONDS = 60.0
#: how long ``start`` waits for a new daemon to say it is up
START_TIMEOUT = 30.0
#: how long a running daemon may take to answer a wake-up before health calls it unresponsive
#: (stopped, or hung); its loop answers at once when well, so this only bounds a busy machine
ANSWER_SECONDS = 10.0


def log(message: str) -> None:
    """Write a line to the agent's log (the daemon's stderr is ``agent.log``)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


def _try_lock(path) -> int | None:
    """Take an exclusive flock on ``path`` without waiting; return the fd, or None if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def running_pid() -> int | None:
    """Return the daemon's pid if a daemon is up, else None."""
    layout.ensure_state_dir()
    fd = _try_lock(layout.lock_file())
    if fd is not None:
        os.close(fd)  # nobody holds it: no daemon
        return None
    try:
        return int(layout.pid_file().read_text().strip())
    except (OSError, ValueError):
        return None  # starting up: locked but pid not written yet


def wake() -> None:
    """Tell the daemon to look at the queue now (a no-op when it is not running)."""
    try:
        fd = os.open(layout.wake_fifo(), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no FIFO, or no daemon reading it (ENXIO): the daemon's tick covers it
    try:
        os.write(fd, b"!")
    except OSError:
        pass  # full: a wake-up is already pending
    finally:
        os.close(fd)


def answers(timeout: float = ANSWER_SECONDS) -> bool:
    """Whether the running daemon turns its loop within ``timeout`` seconds of a wake-up.

    A daemon that is stopped (SIGSTOP) or hung still holds its lock, so the
    lock alone cannot tell it from a working one.
    """
    since = time.time_ns()
    wake()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.stat(layout.beat_file()).st_mtime_ns >= since:
                return True
        except FileNotFoundError:
            pass  # not written yet: the daemon is starting
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _beat() -> None:
    # An explicit time, not utime's "now": the file system's coarse clock may
    # lag the time.time_ns() that answers() compares with.
    now = time.time_ns()
    try:
        os.utime(layout.beat_file(), ns=(now, now))
    except FileNotFoundError:
        layout.write_file(layout.beat_file(), b"", mode=0o600)
        os.utime(layout.beat_file(), ns=(now, now))


def ensure_running() -> None:
    """Make sure a daemon will look at the queue: wake the running one, or start one if none runs.

    A daemon that died (killed, out of memory) must not leave queued jobs
    waiting for nobody.
    """
    if running_pid() is None:
        start()
    else:
        wake()


def start() -> dict:
    """Start the daemon unless it runs; return ``{"pid", "started"}`` once it is up."""
    layout.ensure_state_dir()
    with layout.held(layout.start_lock_file()):
        pid = running_pid()
        if pid is not None:
            return {"pid": pid, "started": False}
        ready_r, ready_w = os.pipe()
        with open(layout.agent_log(), "ab") as out:
            # A new session: the daemon outlives this command and the ssh
            # connection that ran it, and no terminal signal reaches it.
            subprocess.Popen([sys.executable, "-m", __package__, "daemon", "--ready-fd", str(ready_w)],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=layout.home(),
                             pass_fds=(ready_w,), start_new_session=True)
        os.close(ready_w)
        try:
            answer = _read_all(ready_r, START_TIMEOUT)
        finally:
            os.close(ready_r)
        if not answer.startswith("ok "):
            raise RuntimeError(f"the agent daemon did not start; see {layout.agent_log()}")
        return {"pid": int(answer.split()[1]), "started": True}


def _read_all(fd: int, timeout: float) -> str:
    """Read ``fd`` until EOF or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def stop(timeout: float = 10.0) -> None:
    """Stop the daemon (SIGTERM, then SIGKILL) and wait until it is gone."""
    pid = running_pid()
    if pid is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            fd = _try_lock(layout.lock_file())
            if fd is not None:
                os.close(fd)
                return  # the lock goes when the process does
            time.sleep(0.02)
    raise RuntimeError(f"the agent daemon (pid {pid}) did not stop")


def _open_fifo() -> int:
    path = layout.wake_fifo()
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            os.unlink(path)
            os.mkfifo(path, 0o600)
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
    # Read-write, so the FIFO always has a writer and select() never reports
    # a permanent end-of-file after a ``submit`` closes its end.
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


class Daemon:
    """The scheduler and autostop loop."""

    def __init__(self) -> None:
        self.conn = jobs.connect()
        self.stopping = False
        #: the jobs this daemon started and has not reaped: id -> (job, driver, accelerators asked for)
        self.running: dict[int, tuple[jobs.Job, subprocess.Popen, float | None]] = {}
        self.autostop_proc: subprocess.Popen | None = None
        #: the idle clock value autostop last fired for (it fires once per idle period)
        self.fired_for: float | None = None
        self.retry_at: float | None = None

    def recover(self) -> None:
        """Fail the jobs a previous daemon left running, and stop what is left of them."""
        left = jobs.end_all(self.conn, None, jobs.ACTIVE, jobs.FAILED)
        if not left:
            return
        from . import driver

        log(f"jobs {', '.join(str(j.id) for j in left)} were running when the last daemon ended: FAILED")
        info = driver.load_cluster_info()
        for job in left:
            # Local leftovers first (fast), so the next job cannot overlap them on the head.
            if driver.is_driver(job.driver_pid, job.driver_boot, job.id):
                procs.kill_group(job.driver_pid, grace=2.0)
            part.kill(job.id)
        if info and len(info.get("runners") or []) > 1:
            def remote() -> None:
                try:
                    runners = driver.runners_of(info)
                    for job in left:
                        driver.kill_parts(runners, job.id, range(1, len(runners)))
                except Exception:
                    traceback.print_exc()

            threading.Thread(target=remote, daemon=True).start()

    def launch_ready(self) -> None:
        """Start drivers for the oldest PENDING jobs, for as long as each fits beside those running."""
        while not self.stopping and self.launch_next():
            pass

    def launch_next(self) -> bool:
        """Start a driver for the oldest PENDING job if it fits the node now; False if none started."""
        info = None
        if self.running:
            from .driver import load_cluster_info

            info = load_cluster_info() or {}
        capacity = float((info or {}).get("num_gpus_per_node") or 0)
        wanted: dict[int, float | None] = {}

        def admit(pending: jobs.Job) -> bool:
            wanted[pending.id] = sharing.job_gpus(pending.id)
            return sharing.fits(wanted[pending.id], (g for _, _, g in self.running.values()), capacity)

        job = jobs.claim_next(self.conn, admit)
        if job is None:
            return False
        try:
            proc = subprocess.Popen([sys.executable, "-m", __package__, "driver", "--job", str(job.id)],
                                    stdin=subprocess.DEVNULL, cwd=layout.home(),
                                    start_new_session=True)
        except OSError as exc:
            log(f"cannot start the driver of job {job.id}: {exc}")
            jobs.finish(self.conn, job.id, jobs.FAILED, None)
            return True
        # First: whatever fails next, this driver is ours to reap.
        self.running[job.id] = (job, proc, wanted.get(job.id))
        jobs.set_driver(self.conn, job.id, proc.pid, layout.boot_id())
        log(f"job {job.id} started (driver pid {proc.pid})")
        if jobs.get(self.conn, job.id).status not in jobs.ACTIVE:
            # Cancelled between the claim and recording the pid: the cancel
            # could not see this driver, so stop it here.
            procs.kill_group(proc.pid, grace=2.0)
        return True

    def reap(self) -> None:
        """Notice drivers that ended; a job its driver left unfinished has failed."""
        for job, proc, _ in list(self.running.values()):
            if proc.poll() is None:
                continue
            del self.running[job.id]
            if jobs.finish(self.conn, job.id, jobs.FAILED, None):
                log(f"the driver of job {job.id} exited with {proc.returncode} before ending the job")
            jobs.touch(self.conn)

    def autostop(self) -> None:
        """Stop (or tear down) the cluster once it has been idle long enough."""
        now = time.time()
        if self.autostop_proc is not None:
            code = self.autostop_proc.poll()
            if code is None:
                return
            self.autostop_proc = None
            if code != 0:
                log(f"autostop command failed with exit code {code}; retrying in a minute")
                self.retry_at = now + AUTOSTOP_RETRY_SECONDS
        idle_minutes, down = jobs.get_autostop(self.conn)
        if idle_minutes is None:
            return
        counts = jobs.counts(self.conn)
        if any(counts.get(s) for s in (jobs.PENDING, *jobs.ACTIVE)) or self.running:
            return
        last = jobs.last_active(self.conn)
        if now - last < idle_minutes * 60:
            return
        if self.fired_for == last and (self.retry_at is None or now < self.retry_at):
            return
        self.fired_for, self.retry_at = last, None
        from .driver import load_cluster_info

        info = load_cluster_info() or {}
        action = "down" if down else "stop"
        command = (info.get("autostop") or {}).get(action)
        if not command:
            log(f"autostop: idle for {idle_minutes:g} min, but this cloud cannot {action} the "
                f"cluster from inside it (unsupported)")
            return
        log(f"autostop: idle for {idle_minutes:g} min; running the {action} command")
        # Bucket mounts on every node are flushed and unmounted first: a node
        # stopped with writes not uploaded loses them. If that fails, so does
        # the command, and it is tried again later.
        command = f"{layout.agent_command(sys.executable, 'unmount --all-nodes')} && {command}"
        env = layout.clean_env(dict(os.environ))
        # Teardown kills every process carrying the node marker; the command
        # doing the teardown must not be one of them.
        env.pop(NODE_MARKER, None)
        with open(layout.autostop_log(), "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} autostop after {idle_minutes:g} idle "
                      f"minutes, {action}: {command}\n".encode())
            out.flush()
            try:
                self.autostop_proc = subprocess.Popen(
                    ["bash", "-c", command], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, cwd=layout.home(), env=env, start_new_session=True)
            except OSError as exc:
                log(f"autostop: cannot run the {action} command: {exc}")
                self.retry_at = now + AUTOSTOP_RETRY_SECONDS

    def serve(self, ready_fd: int | None) -> int:
        """Run until SIGTERM; tell ``ready_fd`` once up."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

        def on_stop(_signum, _frame) -> None:
            self.stopping = True

        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD reaches the wake-up fd
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        # A handler rather than SIG_IGN: an ignored signal stays ignored across
        # exec, and every job would inherit it.
        signal.signal(signal.SIGHUP, lambda *_: None)
        fifo = _open_fifo()

        self.recover()
        jobs.touch(self.conn)  # the idle clock starts with the daemon
        log(f"agent daemon {os.getpid()} up")
        if ready_fd is not None:
            os.write(ready_fd, f"ok {os.getpid()}\n".encode())
            os.close(ready_fd)

        while not self.stopping:
            try:
                self.reap()
                self.launch_ready()
                self.autostop()
            except Exception:
                # A locked database or an unreadable cluster.json must not end the daemon.
                traceback.print_exc()
            try:
                _beat()
            except OSError:
                traceback.print_exc()
            if self.stopping:
                break
            ready, _, _ = select.select([wake_r, fifo], [], [], POLL_SECONDS)
            for fd in ready:
                _drain(fd)
        log(f"agent daemon {os.getpid()} stopping")
        return 0


def main(ready_fd: int | None) -> int:
    """The ``daemon`` command: become the daemon, unless one already runs."""
    layout.ensure_state_dir()
    lock = _try_lock(layout.lock_file())
    if lock is None:
        log("another agent daemon is running")
        return 1
    layout.write_file(layout.pid_file(), f"{os.getpid()}\n")
    try:
        return Daemon().serve(ready_fd)
    finally:
        try:
            if layout.pid_file().read_text().strip() == str(os.getpid()):
                layout.pid_file().unlink()
        except OSError:
            pass
        os.close(lock)
