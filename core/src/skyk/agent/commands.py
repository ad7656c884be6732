"""The agent's commands, as ``python -m skyk_agent COMMAND`` runs them on a node.

Every command prints one JSON object on stdout and exits 0 (``logs`` prints
the raw log instead). Errors print a message on stderr and exit 1; an
unknown job id exits 3 with ``no job N on this cluster``. ``unmount``
prints its JSON answer even when a flush timed out, then that error and
exit 1.

Internal commands, run by the agent itself: ``daemon``, ``driver``, ``part``
and ``kill-part``. ``part`` and ``driver`` normally never get here: the
package's ``__main__`` runs them without loading argparse and SQLite, since
their start-up time is every job's start-up latency.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import shutil
import sys

from . import jobs, layout

EXIT_ERROR = 1
EXIT_UNKNOWN_JOB = 3

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: a SKYK_TASK_ID given by the submitter (a managed job's, the same over its recoveries)
_TASK_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class CommandError(Exception):
    """A command cannot do what it was asked; the message goes to stderr."""


def _print(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _job_ids(values: list[str]) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise CommandError(f"job ids are numbers, not {' '.join(values)}") from None


def _variables(spec: dict, field: str) -> dict[str, str]:
    value = spec.get(field) or {}
    if not isinstance(value, dict):
        raise CommandError(f"submit: {field} must be an object")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise CommandError(f"submit: {field}: {key!r} is not a valid environment variable name")
        text = "" if item is None else str(item)
        if "\0" in text:
            raise CommandError(f"submit: {field}.{key} contains a NUL byte")
        out[key] = text
    return out


def cmd_submit(_args) -> None:
    try:
        spec = json.load(sys.stdin)
    except ValueError as exc:
        raise CommandError(f"submit: the job spec on stdin is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise CommandError("submit: the job spec must be a JSON object")
    for field in ("name", "setup", "run"):
        if spec.get(field) is not None and not isinstance(spec[field], str):
            raise CommandError(f"submit: {field} must be a string or null")
    envs, secrets = _variables(spec, "envs"), _variables(spec, "secrets")
    gpus = spec.get("gpus")
    if gpus is not None and (not isinstance(gpus, (int, float)) or isinstance(gpus, bool)
                             or not 0 < gpus < float("inf")):
        raise CommandError("submit: gpus must be a positive number or null")
    task_id = spec.get("task_id")
    if task_id is not None and not (isinstance(task_id, str) and _TASK_ID.match(task_id)):
        raise CommandError("submit: task_id must be up to 200 letters, digits and ._-")
    script = {"name": spec.get("name"), "setup": spec.get("setup") or None,
              "run": spec.get("run") or None, "gpus": gpus, "task_id": task_id}

    def prepare(job_id: int) -> None:
        # A rolled-back submit may have left files under this id.
        shutil.rmtree(layout.job_dir(job_id), ignore_errors=True)
        directory = layout.ensure_job_dir(job_id)
        layout.write_json(directory / "spec.json", script)
        # Secrets never go on a command line: only this 0600 file carries them.
        layout.write_json(directory / "env.json", {"envs": envs, "secrets": secrets}, mode=0o600)

    layout.ensure_state_dir()
    conn = jobs.connect()
    job_id = jobs.add(conn, script["name"], bool(script["setup"]), prepare)
    from .daemon import ensure_running

    try:
        ensure_running()
    except RuntimeError as exc:
        raise CommandError(f"job {job_id} is queued, but {exc}") from None
    _print({"job_id": job_id})


def cmd_queue(_args) -> None:
    _print({"jobs": [j.to_json() for j in jobs.list_jobs(jobs.connect())]})


def cmd_job(args) -> None:
    job = jobs.get(jobs.connect(), args.id).to_json()
    if args.log_from is None:
        _print({"job": job})
        return
    # The job is read before its log: the driver writes all output before it
    # marks the job ended, so a finished job's log read now is complete.
    from .daemon import running_pid
    from .logs import read_from

    if args.log_from < 0 or args.log_max < 1:
        raise CommandError("--log-from takes an offset >= 0 and --log-max a size >= 1")
    chunk = read_from(args.id, args.log_from, args.log_max)
    # Whether the daemon runs: without it, no job on this node makes progress (the node is
    # dead, its processes gone), even if the job's record still says RUNNING.
    _print({"job": job, "log": base64.b64encode(chunk).decode("ascii"), "daemon": running_pid() is not None})


def cmd_logs(args) -> None:
    from .logs import stream

    if args.tail is not None and args.tail < 0:
        raise CommandError("--tail takes a number of lines >= 0")
    try:
        stream(jobs.connect(), args.id, args.follow, args.tail)
    except BrokenPipeError:
        # The reader went away (e.g. Ctrl-C in the CLI): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


def cmd_cancel(args) -> None:
    from .driver import kill_job, load_cluster_info

    conn = jobs.connect()
    if args.all:
        ids = None
    else:
        if not args.ids:
            raise CommandError("cancel: name job ids, or --all")
        ids = _job_ids(args.ids)
        for job_id in ids:
            jobs.get(conn, job_id)  # an unknown id cancels nothing
    ended = jobs.end_all(conn, ids, (jobs.PENDING, *jobs.ACTIVE), jobs.CANCELLED)
    running = [j for j in ended if j.status in jobs.ACTIVE]
    if running:
        info = load_cluster_info()
        from .driver import parallel

        for error in parallel([(lambda j=j: kill_job(j, info)) for j in running]):
            if error is not None:
                print(f"skyk-agent: stopping a job: {error}", file=sys.stderr)
    from .daemon import wake

    wake()  # the next job may start now
    _print({"cancelled": [j.id for j in ended]})


def cmd_autostop(args) -> None:
    conn = jobs.connect()
    if args.cancel:
        if args.idle_minutes is not None or args.down:
            raise CommandError("autostop: --cancel takes no other option")
        jobs.set_autostop(conn, None, False)
    else:
        if args.idle_minutes is None:
            raise CommandError("autostop: give --idle-minutes M (and optionally --down), or --cancel")
        if not math.isfinite(args.idle_minutes) or args.idle_minutes < 0:
            raise CommandError("autostop: --idle-minutes must be a number >= 0")
        jobs.set_autostop(conn, args.idle_minutes, args.down)
    idle, down = jobs.get_autostop(conn)
    _print({"autostop": {"idle_minutes": idle, "down": down}})


def _health() -> dict:
    import time

    from .daemon import answers, running_pid

    conn = jobs.connect()
    pid = running_pid()
    answering = pid is not None and answers()
    counts = jobs.counts(conn)
    running = sum(counts.get(s, 0) for s in jobs.ACTIVE)
    pending = counts.get(jobs.PENDING, 0)
    idle = 0.0 if running or pending else max(0.0, time.time() - jobs.last_active(conn))
    minutes, down = jobs.get_autostop(conn)
    # alive: a daemon holds its lock; answering: it also turned its loop when woken.
    return {"alive": pid is not None, "answering": answering, "pid": pid, "running": running,
            "pending": pending, "idle_seconds": round(idle, 3),
            "autostop": {"idle_minutes": minutes, "down": down}}


def cmd_health(_args) -> None:
    _print(_health())


def cmd_start(_args) -> None:
    from .daemon import start

    try:
        _print(start())
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None


def cmd_shutdown(_args) -> None:
    from .daemon import stop
    from .driver import kill_job, load_cluster_info, parallel

    # The daemon goes first, so it cannot start a job while we stop the rest.
    try:
        stop()
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None
    conn = jobs.connect()
    ended = jobs.end_all(conn, None, (jobs.PENDING, *jobs.ACTIVE), jobs.CANCELLED)
    running = [j for j in ended if j.status in jobs.ACTIVE]
    if running:
        info = load_cluster_info()
        parallel([(lambda j=j: kill_job(j, info)) for j in running])
    _print({"ok": True})


def cmd_mount(_args) -> None:
    """Mount and copy the buckets of the spec read as JSON on stdin (see :mod:`.mounts`)."""
    from .mounts import MountError, mount

    try:
        spec = json.load(sys.stdin)
    except ValueError as exc:
        raise CommandError(f"mount: the spec on stdin is not JSON: {exc}") from None
    try:
        _print(mount(spec))
    except MountError as exc:
        raise CommandError(str(exc)) from None


def cmd_unmount(args) -> None:
    """Flush and unmount this node's bucket mounts (``--all-nodes``: every node's, from the head)."""
    from .mounts import MountError, unmount, unmount_cluster

    try:
        if args.all_nodes:
            from .driver import load_cluster_info

            result, timed_out = unmount_cluster(load_cluster_info())
        else:
            result, timed_out = unmount()
    except MountError as exc:
        raise CommandError(str(exc)) from None
    _print(result)
    if timed_out:
        more = f" (and {len(timed_out) - 1} more)" if len(timed_out) > 1 else ""
        raise CommandError(f"unmount: {timed_out[0]}{more}")


#: how a VM powers itself off; the cloud decides whether it then stops or is deleted
POWEROFF = "sudo -n shutdown -h now"
#: seconds a worker may take to accept its power-off
_POWEROFF_TIMEOUT = 60.0


def cmd_wait_nodes(args) -> None:
    """Probe the nodes whose runner specs come as a JSON list on stdin until each answers.

    Prints ``{"unanswered": {index: what the last try said}}``. Run on the
    head, it reaches the workers over the internal network, and the
    connections it opens stay up for the first job.
    """
    import time

    from .driver import parallel
    from .runners import RunnerError, runner_from_spec, wait_until_answers

    try:
        runners = [runner_from_spec(spec) for spec in json.load(sys.stdin)]
    except (ValueError, TypeError, KeyError, AttributeError, RunnerError) as exc:
        raise CommandError(f"wait-nodes: stdin must be a JSON list of runner specs: {exc}") from None
    deadline = time.monotonic() + max(0.0, args.timeout)
    unanswered: dict[int, str] = {}

    def probe(index: int) -> None:
        error = wait_until_answers(runners[index], deadline)
        if error is not None:
            unanswered[index] = error

    parallel([(lambda i=i: probe(i)) for i in range(len(runners))])
    _print({"unanswered": {str(i): unanswered[i] for i in sorted(unanswered)}})


def cmd_poweroff(_args) -> None:
    """Unmount every node's buckets, then power off every worker, then this (the head) node.

    This is autostop on a VM cloud. A mount whose writes are still not
    uploaded after the flush time-out stops the power-off (exit 1), and the
    daemon tries again later.
    """
    import subprocess

    from .driver import load_cluster_info, parallel, runners_of
    from .mounts import unmount_cluster

    info = load_cluster_info() or {}
    workers = runners_of(info)[1:] if info.get("runners") else []
    # Files written to bucket mounts are uploaded first: powering off before loses them.
    unmounted, timed_out = unmount_cluster(info)
    for error in unmounted["errors"]:
        print(f"skyk-agent: {error}", file=sys.stderr)
    if timed_out:
        raise CommandError(f"not powering off: {timed_out[0]}")

    def off(rank: int) -> None:
        # A node going down may drop the connection before it answers (ssh's 255).
        result = workers[rank - 1].run(POWEROFF, timeout=_POWEROFF_TIMEOUT)
        if result.returncode not in (0, 255):
            print(f"worker {rank} did not power off: {result.stderr.strip() or result.returncode}",
                  file=sys.stderr)

    # Workers first: once the head is off, nothing is left to reach them.
    for rank, error in enumerate(parallel([(lambda r=r: off(r)) for r in range(1, len(workers) + 1)]), 1):
        if error is not None:
            print(f"worker {rank} did not power off: {error}", file=sys.stderr)
    result = subprocess.run(POWEROFF, shell=True, capture_output=True, text=True)
    if result.returncode != 0:
        raise CommandError(f"powering off the head node failed: {result.stderr.strip() or result.returncode}")
    _print({"ok": True})


def cmd_daemon(args) -> int:
    from .daemon import main

    return main(args.ready_fd)


def cmd_driver(args) -> int:
    from .driver import main

    return main(args.job)


def cmd_part(args) -> int:
    from .part import cli_exit, main

    cli_exit(main(args.job, args.rank, args.phase))
    return 0  # not reached


def cmd_kill_part(args) -> None:
    from .part import kill

    kill(args.job)
    _print({"ok": True})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # Usage errors exit 1 like every other error (argparse's own is 2).
        self.exit(EXIT_ERROR, f"{self.prog}: {message}\n")


def parser() -> argparse.ArgumentParser:
    """Return the argument parser of the agent's command line."""
    p = _Parser(prog="skyk_agent", description="skyk's node agent")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start the daemon unless it runs").set_defaults(fn=cmd_start)
    sub.add_parser("submit", help="queue the job read as JSON from stdin").set_defaults(fn=cmd_submit)
    sub.add_parser("queue", help="list the jobs, newest first").set_defaults(fn=cmd_queue)
    s = sub.add_parser("job", help="show one job (with --log-from: and its log from that byte)")
    s.add_argument("id", type=int)
    s.add_argument("--log-from", type=int, metavar="OFFSET")
    s.add_argument("--log-max", type=int, default=1 << 20, metavar="BYTES")
    s.set_defaults(fn=cmd_job)
    s = sub.add_parser("logs", help="print a job's log")
    s.add_argument("id", type=int)
    s.add_argument("--follow", "-f", action="store_true")
    s.add_argument("--tail", type=int)
    s.set_defaults(fn=cmd_logs)
    s = sub.add_parser("cancel", help="cancel jobs")
    s.add_argument("ids", nargs="*")
    s.add_argument("--all", action="store_true")
    s.set_defaults(fn=cmd_cancel)
    s = sub.add_parser("autostop", help="stop the cluster after it is idle")
    s.add_argument("--idle-minutes", type=float)
    s.add_argument("--down", action="store_true")
    s.add_argument("--cancel", action="store_true")
    s.set_defaults(fn=cmd_autostop)
    sub.add_parser("health", help="is the daemon up, how busy and idle").set_defaults(fn=cmd_health)
    sub.add_parser("shutdown", help="cancel every job and stop the daemon").set_defaults(fn=cmd_shutdown)
    s = sub.add_parser("wait-nodes", help="wait until the nodes on stdin answer (from the head)")
    s.add_argument("--timeout", type=float, required=True)
    s.set_defaults(fn=cmd_wait_nodes)
    sub.add_parser("mount", help="mount and copy the buckets of the spec read as JSON from stdin"
                   ).set_defaults(fn=cmd_mount)
    s = sub.add_parser("unmount", help="upload what was written, then unmount every bucket mount")
    s.add_argument("--all-nodes", action="store_true",
                   help="on the head: every node of the cluster, workers through their runners")
    s.set_defaults(fn=cmd_unmount)
    sub.add_parser("poweroff", help="power off every node, workers first (autostop on VMs)"
                   ).set_defaults(fn=cmd_poweroff)
    s = sub.add_parser("daemon", help=argparse.SUPPRESS)
    s.add_argument("--ready-fd", type=int)
    s.set_defaults(fn=cmd_daemon)
    s = sub.add_parser("driver", help=argparse.SUPPRESS)
    s.add_argument("--job", type=int, required=True)
    s.set_defaults(fn=cmd_driver)
    s = sub.add_parser("part", help=argparse.SUPPRESS)
    s.add_argument("--job", type=int, required=True)
    s.add_argument("--rank", type=int, required=True)
    s.add_argument("--phase", choices=("setup", "run"), required=True)
    s.set_defaults(fn=cmd_part)
    s = sub.add_parser("kill-part", help=argparse.SUPPRESS)
    s.add_argument("--job", type=int, required=True)
    s.set_defaults(fn=cmd_kill_part)
    return p


def run(argv: list[str] | None = None) -> int:
    """Run one agent command; return the exit code."""
    args = parser().parse_args(argv)
    try:
        code = args.fn(args)
    except jobs.UnknownJob as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_UNKNOWN_JOB
    except CommandError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # one line for the CLI; the traceback only when debugging
        if os.environ.get("SKYK_DEBUG"):
            raise
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return code or 0

