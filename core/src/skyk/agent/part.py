"""One phase (setup or run) of one job on one node: the ``part`` and ``kill-part`` commands.

The driver starts ``part`` on every node through that node's runner. The
part puts itself at the head of a new process group, records the group in
the job's directory, runs the phase's script with ``bash -c`` and exits with
bash's code. ``kill-part`` on the same node kills that group: killing the
driver's local end (an ssh client) would not stop a remote command.

Cancelling races with starting, so both sides follow one rule: ``part``
records its group *then* looks for the ``cancelled`` marker; ``kill-part``
writes the marker *then* reads the recorded groups. Either the killer sees
the group, or the part sees the marker and runs nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from . import layout, procs

PHASES = ("setup", "run")
_CANCELLED = "cancelled"


def node_name(rank: int) -> str:
    """Return the name the log gives node ``rank`` (``head``, ``worker1``, ...)."""
    return "head" if rank == 0 else f"worker{rank}"


def task_id(cluster: str, job_id: int, submitted_at: float) -> str:
    """Return the job's SKYK_TASK_ID (``skyk-<UTC time>_<cluster>_<job id>``)."""
    from datetime import datetime, timezone  # the driver needs it, parts do not

    stamp = datetime.fromtimestamp(submitted_at, tz=timezone.utc).strftime("%Y-%m-%d-%H-%M-%S-%f")
    return f"skyk-{stamp}_{cluster}_{job_id}"


def context(info: dict, job_id: int, submitted_at: float, given_task_id: str | None = None) -> dict:
    """Return what every part of the job needs to know about the cluster (``context.json``).

    Only the head has ``cluster.json``; the driver sends this to the workers.
    ``given_task_id`` is the submitter's task id (a managed job's, stable
    across its clusters); without one, the id names this cluster and job.
    """
    return {"cluster": info["cluster"], "cloud": info.get("cloud"), "region": info.get("region"),
            "zone": info.get("zone"), "num_nodes": int(info.get("num_nodes") or len(info["node_ips"])),
            "num_gpus_per_node": int(info.get("num_gpus_per_node") or 0),
            "node_ips": list(info["node_ips"]), "job_id": job_id,
            "task_id": given_task_id or task_id(info["cluster"], job_id, submitted_at)}


def system_env(ctx: dict, rank: int, phase: str) -> dict[str, str]:
    """Return the SKYK_* (and SkyPilot-named) variables of node ``rank``; user envs never override them."""
    ips = "\n".join(ctx["node_ips"])
    info = json.dumps({"cluster_name": ctx["cluster"], "cloud": ctx["cloud"], "region": ctx["region"],
                       "zone": ctx["zone"], "num_nodes": ctx["num_nodes"], "node_ips": ctx["node_ips"]})
    shared = {"NODE_RANK": str(rank), "NODE_IPS": ips, "NUM_NODES": str(ctx["num_nodes"]),
              "NUM_GPUS_PER_NODE": str(ctx["num_gpus_per_node"]), "CLUSTER_INFO": info,
              "TASK_ID": ctx["task_id"]}
    env = {f"SKYK_{k}": v for k, v in shared.items()}
    env.update({f"SKYPILOT_{k}": v for k, v in shared.items()})
    # The node's own address: where a service should bind when nodes share
    # this machine's port space (the local cloud without namespaces).
    env["SKYK_NODE_IP"] = ctx["node_ips"][rank]
    env["SKYK_JOB_ID"] = str(ctx["job_id"])
    env["SKYK_CLUSTER_NAME"] = ctx["cluster"]
    if phase == "setup":
        # SkyPilot names the setup phase's rank and addresses separately.
        env["SKYPILOT_SETUP_NODE_RANK"] = str(rank)
        env["SKYPILOT_SETUP_NODE_IPS"] = ips
    return env


def _record_group(job_id: int, rank: int, pgid: int) -> None:
    # One file per rank: nodes that share a home (NFS) share the job directory.
    layout.write_file(layout.job_dir(job_id) / f"part-{rank}.pgid", f"{pgid} {layout.boot_id()}\n")


def main(job_id: int, rank: int, phase: str) -> int:
    """Run ``phase`` of job ``job_id`` as node ``rank``; return the exit code."""
    # One stream: the driver reads stdout only, and through ssh stderr would
    # travel on another channel and arrive out of order.
    os.dup2(1, 2)
    try:
        os.setsid()
    except OSError:
        pass  # already a session (and group) leader, e.g. started by sshd
    pgid = os.getpgrp()

    stop: list[int] = []

    def forward(signum: int, _frame) -> None:
        # The group gets the signal once; the copy we send ourselves is ignored.
        if not stop:
            stop.append(signum)
            try:
                os.killpg(pgid, signum)
            except OSError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    directory = layout.ensure_job_dir(job_id)
    _record_group(job_id, rank, pgid)
    if (directory / _CANCELLED).exists() or stop:
        return 128 + signal.SIGTERM

    spec = layout.read_json(directory / "spec.json")
    script = spec.get(phase)
    if not script:
        return 0
    secrets = layout.read_json(directory / "env.json")
    ctx = layout.read_json(directory / "context.json")

    env = layout.clean_env(dict(os.environ))
    env.setdefault("PYTHONUNBUFFERED", "1")  # output reaches the log as it is printed
    env.update(secrets.get("envs") or {})
    env.update(secrets.get("secrets") or {})
    env.update(system_env(ctx, rank, phase))
    # Always the workdir, never the home: what a job serves from its working
    # directory must not include ~/.skyk and its secrets.
    cwd = layout.workdir()
    cwd.mkdir(exist_ok=True)

    try:
        proc = subprocess.Popen(["bash", "-c", script], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
    except OSError as exc:
        print(f"skyk: cannot start bash on {node_name(rank)}: {exc}", flush=True)
        return 127
    if stop:
        # A signal came while bash was starting: it may have missed the group signal.
        try:
            os.killpg(pgid, stop[0])
        except OSError:
            pass
    code = proc.wait()
    return 128 - code if code < 0 else code


def kill(job_id: int, grace: float = 2.0) -> None:
    """Stop job ``job_id``'s parts on this node and keep new ones from starting."""
    directory = layout.ensure_job_dir(job_id)
    layout.write_file(directory / _CANCELLED, b"")
    boot = layout.boot_id()
    for path in sorted(directory.glob("part-*.pgid")):
        try:
            pgid_text, _, recorded_boot = path.read_text().strip().partition(" ")
            pgid = int(pgid_text)
        except (OSError, ValueError):
            continue
        if recorded_boot and boot and recorded_boot != boot:
            continue  # recorded before a reboot: the number now belongs to someone else
        procs.kill_group(pgid, grace, leader_first=True)


def cli_exit(code: int) -> None:
    """Exit the part process with ``code`` without Python's shutdown noise on a closed pipe."""
    try:
        sys.stdout.flush()
    except OSError:
        pass
    os._exit(code)
