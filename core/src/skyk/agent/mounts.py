"""A node's bucket mounts: rclone FUSE mounts and copies of buckets, and undoing them safely.

``mount`` (:func:`mount`) reads the spec the CLI sends on stdin::

    {"remotes": {NAME: <NodeAccess.as_json()>},
     "mounts": [{"dest": "~/data", "remote": NAME, "path": "bucket[/prefix]",
                 "mode": "MOUNT" | "MOUNT_CACHED" | "COPY"}],
     "jobs_daemon": PID}      # optional: the head's daemon, on a local cluster's worker

A local cluster's nodes in network namespaces run every command in a mount
namespace of its own, and every job starts from the head daemon's: there
the mounts are made (:mod:`.mountns`), the head's daemon found by its pid
file, a worker's named by ``jobs_daemon``.

It writes rclone's config under ``~/.skyk/rclone`` (see :mod:`.rclone`),
copies COPY buckets, and starts one detached ``rclone mount`` per mount,
recorded in ``~/.skyk/mounts.json`` so that a later ``unmount`` finds them.

Writes to a mount land in rclone's VFS cache and are uploaded a second
after the file is closed. Unmounting before that upload loses the file, so
:func:`unmount` first waits until rclone marks no cached file dirty (its
``vfsMeta`` JSON says ``"Dirty": true`` until the upload succeeded), and
leaves a mount that does not get there in time mounted.

Which mount namespace a mount is made in, on a local sandbox whose
commands each get one of their own, is :mod:`.mountns`'s part.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import layout, mountns, procs, rclone
from .runners import NODE_MARKER

#: how each mount mode uses rclone's VFS cache (COPY downloads once, with no mount)
CACHE_MODES = {"MOUNT": "writes", "MOUNT_CACHED": "full"}
MODES = ("MOUNT", "MOUNT_CACHED", "COPY")
#: how long after a file is closed rclone uploads it
WRITE_BACK = "1s"
#: seconds an ``rclone mount`` may take to show up as a mount point
MOUNT_TIMEOUT = 60.0
#: seconds the bucket check before a mount may take
CHECK_TIMEOUT = 60.0
#: seconds ``unmount`` waits, in all, for written files to be uploaded
FLUSH_TIMEOUT = 300.0
#: seconds between the lines that say a flush is still going
PROGRESS_SECONDS = 10.0
#: seconds rclone may take to exit once unmounted, and again after SIGTERM
STOP_GRACE = 10.0

_STAMP = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ")
#: a URL's query (where a SAS token travels) and key=value secrets: never repeated in a message
_SECRETISH = re.compile(r"\?[^\s\"']*|\b((?:sig|signature|token|key|secret)[A-Za-z_]*)=[^&\s\"']+",
                        re.IGNORECASE)


class MountError(Exception):
    """A mount or unmount cannot be done; the message is one line for the user."""


class FlushTimeout(MountError):
    """Files written to a mount were still not uploaded when the time ran out."""


@dataclass(frozen=True)
class Mount:
    """One entry of the spec: what goes where, and how."""

    dest: Path
    remote: str
    path: str
    mode: str

    @property
    def source(self) -> str:
        """Return rclone's name for the bucket place, ``REMOTE:bucket[/prefix]``."""
        return f"{self.remote}:{self.path}"

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]


def _log(message: str) -> None:
    print(f"skyk-agent: {message}", file=sys.stderr, flush=True)


# -- the spec -------------------------------------------------------------------------------------

def parse_spec(spec: object) -> tuple[dict, list[Mount]]:
    """Return the remotes and mounts of a ``mount`` spec; raise :class:`MountError` if it is malformed."""
    if not isinstance(spec, dict):
        raise MountError("mount: the spec must be a JSON object")
    remotes, items = spec.get("remotes") or {}, spec.get("mounts")
    if not isinstance(items, list):
        raise MountError("mount: 'mounts' must be a list")
    if items and (problem := rclone.check_remotes(remotes)):
        raise MountError(f"mount: {problem}")
    mounts: list[Mount] = []
    for item in items:
        if not isinstance(item, dict):
            raise MountError("mount: each mount must be an object with dest, remote, path and mode")
        dest, remote, path, mode = (item.get(k) for k in ("dest", "remote", "path", "mode"))
        if mode not in MODES:
            raise MountError(f"mount: mode {mode!r} is not one of {', '.join(MODES)}")
        if not isinstance(remote, str) or remote not in remotes:
            raise MountError(f"mount: remote {remote!r} is not among the spec's remotes")
        if (not isinstance(path, str) or not path or path.startswith("/")
                or any(c in path for c in "\0\r\n")):
            raise MountError(f"mount: path {path!r} must be 'bucket' or 'bucket/prefix'")
        mount = Mount(expand_dest(dest), remote, path.rstrip("/"), mode)
        if any(m.dest == mount.dest for m in mounts):
            raise MountError(f"mount: {dest} is the destination of two mounts")
        mounts.append(mount)
    return remotes, mounts


def _name_jobs_daemon(pid: object) -> None:
    """Record the daemon this node's jobs start from (another node's: see :func:`mountns.jobs_pid`)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise MountError(f"mount: jobs_daemon {pid!r} must be a process id")
    path = layout.jobs_daemon_file()
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(f"{pid}\n")
    staged.replace(path)


def expand_dest(dest: object) -> Path:
    """Return the absolute path a mount's ``dest`` names: absolute, or ``~/...`` under the node's $HOME."""
    if not isinstance(dest, str) or "\0" in dest or not (dest.startswith("/") or dest.startswith("~/")):
        raise MountError(f"mount: destination {dest!r} must be an absolute path or start with ~/")
    path = layout.home() / dest[2:] if dest.startswith("~/") else Path(dest)
    path = Path(os.path.normpath(path))
    if path in (Path("/"), layout.home()):
        raise MountError(f"mount: {dest} cannot be a mount's destination")
    return path


# -- rclone ---------------------------------------------------------------------------------------

def _program(name: str, env: dict[str, str]) -> str:
    found = shutil.which(name, path=env.get("PATH"))
    if found is None:
        raise MountError(f"{name} is not installed on this node: install rclone "
                         f"(https://rclone.org/install/) and fuse3 to mount buckets")
    return found


def last_error(text: str) -> str:
    """Return the line of rclone's output that says what failed, without its time stamp or secrets."""
    lines = [_STAMP.sub("", line).strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"ERROR|CRITICAL|Fatal|Failed|failed", line)]
    line = (errors or lines or ["no message"])[-1]
    # A failed FUSE mount ends with "fusermount: exit status 1"; why is on the helper's line.
    helper = [h.split(":", 1)[1].strip() for h in lines if h.startswith("mount helper error:")]
    if helper and helper[-1] not in line:
        line = f"{line} ({helper[-1]})"
    return _SECRETISH.sub(lambda m: f"{m.group(1)}=REDACTED" if m.group(1) else "?REDACTED", line)[:500]


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _check_bucket(program: str, mount: Mount, env: dict[str, str]) -> None:
    # rclone mounts a bucket that does not exist as an empty directory; asking
    # for the bucket's root says whether it is there (a prefix need not be yet).
    source = f"{mount.remote}:{mount.bucket}"
    try:
        result = subprocess.run([program, "lsjson", "--stat", source], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, env=env, timeout=CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise MountError(f"{source}: the store did not answer within {CHECK_TIMEOUT:g} s") from None
    if result.returncode != 0:
        raise MountError(f"{source}: the bucket does not exist or this node's credentials cannot "
                         f"reach it (rclone: {last_error(result.stderr)})")


def make_dest(dest: Path) -> None:
    """Create the directory ``dest`` for this user; outside what it may write, with ``sudo -n``.

    A destination such as ``/datasets`` on a VM is made as cloud images
    allow, with passwordless sudo, and given to the node's user, who mounts
    or copies into it.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return
    except FileExistsError:
        raise MountError(f"{dest} exists and is not a directory") from None
    except PermissionError:
        pass
    owner = f"{os.getuid()}:{os.getgid()}"
    try:
        result = subprocess.run(["sudo", "-n", "sh", "-c", 'mkdir -p -- "$1" && chown -- "$2" "$1"', "sh",
                                str(dest), owner], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=60)
        why = None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["failed"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = str(exc)
    if why is not None:
        raise MountError(f"cannot create {dest}: this user may not, and sudo -n could not ({why}); "
                         f"use a destination under ~/ or one this user can write")


def _copy(program: str, mount: Mount, env: dict[str, str]) -> None:
    make_dest(mount.dest)
    result = subprocess.run([program, "copy", mount.source, str(mount.dest)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, env=env, cwd=layout.home())
    if result.returncode != 0:
        raise MountError(f"copying {mount.source} to {mount.dest} failed: {last_error(result.stderr)}")


def _check_visible(mount: Mount) -> None:
    # A local sandbox node in a network namespace of its own runs each command
    # in a mount namespace of its own: without a daemon there to mount in,
    # the mount would be this command's alone, and jobs would write to the
    # directory below it, not to the bucket.
    if NODE_MARKER in os.environ and mountns.jobs_pid() is None and mountns.made_for_this_command():
        raise MountError(f"cannot mount {mount.source} on {mount.dest}: this local node runs each "
                         f"command in a mount namespace of its own and has no agent daemon to mount "
                         f"in, so no job would see the mount; use mode COPY, or SKYK_LOCAL_NETNS=0")


def _start(program: str, mount: Mount, env: dict[str, str]) -> dict:
    """Start a detached ``rclone mount``, wait until ``dest`` is mounted; return its record."""
    key = hashlib.sha256(str(mount.dest).encode()).hexdigest()[:16]
    cache = layout.rclone_dir() / "cache" / key
    log_path = layout.rclone_dir() / f"{key}.log"
    make_dest(mount.dest)
    # Where the daemon runs in a mount namespace of its own (a local sandbox),
    # the mount is made there, so that its jobs see it.
    argv = [*mountns.enter(mountns.jobs_pid()), program, "mount", mount.source, str(mount.dest),
            "--vfs-cache-mode", CACHE_MODES[mount.mode], "--vfs-write-back", WRITE_BACK,
            "--cache-dir", str(cache)]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} mount {mount.source} on {mount.dest}\n"
                  .encode())
        out.flush()
        # Its own session and no pipe of ours: it outlives this command and
        # the ssh connection that ran it.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=layout.home(), start_new_session=True)
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not mountns.is_mounted(mount.dest, proc.pid):
        failed = proc.poll() is not None
        if failed or time.monotonic() > deadline:
            procs.kill_group(proc.pid, grace=STOP_GRACE)
            proc.wait()
            why = last_error(_log_tail(log_path)) if failed else f"not mounted within {MOUNT_TIMEOUT:g} s"
            raise MountError(f"mounting {mount.source} on {mount.dest} failed: {why}")
        time.sleep(0.05)
    return {"dest": str(mount.dest), "source": mount.source, "mode": mount.mode, "pid": proc.pid,
            "boot": layout.boot_id(), "cache": str(cache), "log": str(log_path)}


# -- the record -----------------------------------------------------------------------------------

def _load() -> list[dict]:
    try:
        return list(layout.read_json(layout.mounts_file()).get("mounts") or [])
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError) as exc:
        raise MountError(f"{layout.mounts_file()} is unreadable ({exc}); remove it after unmounting "
                         f"by hand (fusermount3 -u DEST)") from None


def _save(records: list[dict]) -> None:
    layout.write_json(layout.mounts_file(), {"mounts": records}, mode=0o600)


def _alive(record: dict) -> bool:
    """Whether the record's rclone still runs (this boot, same pid, same mount)."""
    pid = record.get("pid")
    if record.get("boot") != layout.boot_id() or not procs.pid_alive(pid):
        return False
    argv = procs.cmdline(pid) or []
    return "mount" in argv and record.get("dest") in argv


def _wait_exited(record: dict) -> None:
    # A killed rclone that is still exiting (its cmdline already empty) holds
    # its FUSE connection until it is gone: wait for that, bounded.
    pid = record.get("pid")
    if record.get("boot") != layout.boot_id():
        return
    deadline = time.monotonic() + STOP_GRACE
    while procs.pid_alive(pid) and not procs.cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _fusermount(dest: Path, pid: int | None = None, lazy: bool = False) -> str | None:
    """Unmount ``dest`` in ``pid``'s mount namespace with fusermount3 (or fusermount); return why it failed."""
    for name in ("fusermount3", "fusermount"):
        program = shutil.which(name)
        if program is not None:
            argv = [*mountns.enter(pid), program, "-u", *(["-z"] if lazy else []), str(dest)]
            result = subprocess.run(argv,
                                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            return None if result.returncode == 0 else last_error(result.stderr or result.stdout)
    return "neither fusermount3 nor fusermount is installed"


def _clear_dead(dest: Path) -> None:
    """Detach what a dead rclone of ours left at ``dest``, here and in the jobs' namespace.

    Such a mount point answers ENOTCONN to everything, mkdir included, but
    only once the kernel's attribute cache has expired: the mount table is
    what tells.
    """
    for pid in {None, mountns.jobs_pid()}:
        if mountns.is_mounted(dest, pid):
            _fusermount(dest, pid, lazy=True)


def dirty_files(cache: Path) -> list[str]:
    """Return the files rclone's VFS cache ``cache`` holds that are not uploaded yet.

    A metadata file being rewritten may read as broken JSON: it counts as
    dirty, so no turn of a wait takes a half-written state for clean.
    """
    meta = cache / "vfsMeta"
    found = []
    for root, _dirs, files in os.walk(meta):
        for name in files:
            path = Path(root, name)
            try:
                dirty = json.loads(path.read_bytes()).get("Dirty", False)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, AttributeError):
                dirty = True
            if dirty:
                found.append(str(path.relative_to(meta)))
    return sorted(found)


def _wait_flushed(record: dict, deadline: float, log: Callable[[str], None]) -> None:
    cache, dest = Path(record["cache"]), record["dest"]
    started = next_note = time.monotonic()
    while dirty := dirty_files(cache):
        now = time.monotonic()
        if now >= deadline:
            raise FlushTimeout(f"{dest}: {len(dirty)} written file(s) were still not uploaded to "
                               f"{record['source']} after {now - started:.0f} s (first: {dirty[0]}); "
                               f"left mounted so nothing is lost, see {record.get('log')}")
        if now >= next_note:
            log(f"{dest}: waiting for {len(dirty)} written file(s) to upload to {record['source']}")
            next_note = now + PROGRESS_SECONDS
        time.sleep(0.2)


def _undo(record: dict, deadline: float, log: Callable[[str], None]) -> str | None:
    """Flush and unmount one recorded mount; return a warning (the mount is gone even so), or raise."""
    dest = Path(record["dest"])
    if not _alive(record):
        _wait_exited(record)
        _clear_dead(dest)
        dirty = dirty_files(Path(record["cache"]))
        if dirty:
            return (f"{dest}: rclone had exited with {len(dirty)} written file(s) not uploaded; "
                    f"they are kept in {record['cache']}")
        shutil.rmtree(record["cache"], ignore_errors=True)
        return None
    _wait_flushed(record, deadline, log)
    pid = record["pid"]
    error = _fusermount(dest, pid)
    if error is not None and mountns.is_mounted(dest, pid):
        raise MountError(f"unmounting {dest} failed: {error} (is a process still using it?)")
    stop_by = time.monotonic() + STOP_GRACE
    while procs.pid_alive(pid) and time.monotonic() < stop_by:
        time.sleep(0.05)
    if _alive(record):
        procs.kill_group(pid, grace=STOP_GRACE)
    shutil.rmtree(record["cache"], ignore_errors=True)
    return None


# -- the commands ---------------------------------------------------------------------------------

def mount(spec: object, log: Callable[[str], None] = _log) -> dict:
    """Copy and mount what ``spec`` asks for; return ``{"mounted": [...], "copied": [...]}``.

    A destination already mounted by us from the same place is left as it
    is, so running the same spec again (``skyk start``, a re-launch) is
    harmless. When a mount fails, the mounts this call started are undone.
    """
    remotes, mounts = parse_spec(spec)
    result: dict[str, list[str]] = {"mounted": [], "copied": []}
    if not mounts:
        return result
    layout.ensure_state_dir()
    if spec.get("jobs_daemon") is not None:
        _name_jobs_daemon(spec["jobs_daemon"])
    config = rclone.write_config(layout.rclone_dir(), remotes)
    env = rclone.environment(config, remotes, layout.clean_env(dict(os.environ)))
    program = _program("rclone", env)
    with layout.held(layout.mounts_lock_file()):
        records = _load()
        started: list[dict] = []
        try:
            for item in mounts:
                if item.mode == "COPY":
                    _copy(program, item, env)
                    result["copied"].append(str(item.dest))
                    continue
                records = _mount_one(program, item, env, records, started)
                result["mounted"].append(str(item.dest))
        except MountError:
            for record in started:  # nothing was written to them yet: no flush to wait for
                try:
                    _undo(record, time.monotonic() + STOP_GRACE, log)
                except MountError as exc:
                    log(str(exc))
                    continue
                records.remove(record)
            _save(records)
            if not records:
                rclone.remove_config(layout.rclone_dir())  # as unmount does: nothing reads them
            raise
    return result


def _mount_one(program: str, item: Mount, env: dict[str, str], records: list[dict],
               started: list[dict]) -> list[dict]:
    dest = str(item.dest)
    ours = next((r for r in records if r["dest"] == dest), None)
    if ours is not None:
        if _alive(ours) and mountns.is_mounted(item.dest, ours["pid"]):
            if ours["source"] == item.source:
                return records
            raise MountError(f"{dest} already has {ours['source']} mounted, not {item.source}: "
                             f"unmount first")
        # What a dead rclone left: its mount point (if any) goes, the mount is made again.
        _wait_exited(ours)
        _clear_dead(item.dest)
        records = [r for r in records if r is not ours]
    elif mountns.disconnected(item.dest):
        _fusermount(item.dest, lazy=True)  # a dead FUSE mount, of a lost record: nothing to keep
    elif any(mountns.is_mounted(item.dest, pid) for pid in {None, mountns.jobs_pid()}):
        raise MountError(f"{dest} is already a mount point, not one of skyk's: unmount it "
                         f"(fusermount3 -u {dest}) or mount elsewhere")
    if item.dest.is_dir() and any(item.dest.iterdir()):
        # rclone would mount over them, and they would seem gone.
        raise MountError(f"{dest} is not empty: mounting {item.source} there would hide its files; "
                         f"mount to an empty or new directory")
    _check_bucket(program, item, env)
    _check_visible(item)
    record = _start(program, item, env)
    started.append(record)
    records = [*records, record]
    _save(records)
    return records


def unmount(log: Callable[[str], None] = _log,
            timeout: float = FLUSH_TIMEOUT) -> tuple[dict, list[str]]:
    """Flush and unmount every recorded mount of this node.

    Returns ``{"unmounted": [...], "errors": [...]}`` and the errors that are
    flush time-outs: those mounts stay mounted and recorded, since
    unmounting them would lose what was written. Once nothing is mounted,
    the rclone config and the stores' secret files are removed.
    """
    result: dict[str, list[str]] = {"unmounted": [], "errors": []}
    timed_out: list[str] = []
    if not layout.mounts_file().exists() and not layout.rclone_dir().exists():
        return result, timed_out
    deadline = time.monotonic() + timeout
    with layout.held(layout.mounts_lock_file()):
        records = _load()
        for record in list(records):
            try:
                warning = _undo(record, deadline, log)
            except FlushTimeout as exc:
                timed_out.append(str(exc))
                result["errors"].append(str(exc))
                continue
            except MountError as exc:
                result["errors"].append(str(exc))
                continue
            if warning:
                result["errors"].append(warning)
            records.remove(record)
            _save(records)
            result["unmounted"].append(record["dest"])
        if not records:
            # Nothing reads them any more: the stores' credentials do not stay on the disk
            # of a stopped node. The next ``mount`` writes them again.
            rclone.remove_config(layout.rclone_dir())
    return result, timed_out


def unmount_cluster(info: dict | None, log: Callable[[str], None] = _log) -> tuple[dict, list[str]]:
    """Run :func:`unmount` on this node and, through their runners, on every worker of ``info``.

    Run by the head before the cluster stops or powers off. Workers' entries
    are prefixed with ``node N:``.
    """
    from .driver import parallel, runners_of

    workers = runners_of(info)[1:] if info and info.get("runners") else []
    answers: list[tuple[dict, list[str]]] = [({"unmounted": [], "errors": []}, [])] * (len(workers) + 1)

    def head() -> None:
        answers[0] = unmount(log)

    def worker(rank: int) -> None:
        runner = workers[rank - 1]
        # A worker that never mounted anything may not even have the agent.
        command = (f'if [ -e "$HOME/.skyk/mounts.json" ]; then '
                   f'{layout.agent_command(runner.python, "unmount")}; '
                   f'else echo \'{{"unmounted": [], "errors": []}}\'; fi')
        try:
            done = runner.run(command, timeout=FLUSH_TIMEOUT + 120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            answers[rank] = ({"unmounted": [], "errors": [f"cannot unmount: {exc}"]}, [])
            return
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            answers[rank] = ({"unmounted": [], "errors": [f"cannot unmount: {why}"]}, [])
            return
        # Exit 1 with the JSON answer: a flush timed out, said on stderr (see cmd_unmount).
        stuck = (done.stderr.strip().splitlines() or ["a flush timed out"])[-1:] if done.returncode else []
        answers[rank] = (answer, stuck)

    jobs = [head, *((lambda r=r: worker(r)) for r in range(1, len(workers) + 1))]
    for rank, error in enumerate(parallel(jobs)):
        if error is not None:
            answers[rank] = ({"unmounted": [], "errors": [f"cannot unmount: {error}"]}, [])
    result: dict[str, list[str]] = {"unmounted": [], "errors": []}
    timed_out: list[str] = []
    for rank, (answer, stuck) in enumerate(answers):
        prefix = f"node {rank}: " if rank else ""
        for key in result:
            result[key] += [prefix + str(entry) for entry in answer.get(key) or []]
        timed_out += [prefix + entry for entry in stuck]
    return result, timed_out
