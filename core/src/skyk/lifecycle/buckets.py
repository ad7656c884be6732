"""Buckets on a cluster: made and filled, mounted on every node before setup, flushed before stop and down.

The node side is the agent's (``skyk_agent mount`` / ``unmount``, with
rclone); this module decides what to mount and drives every node in
parallel. Credentials reach a node only for the stores its task uses, on
the agent's stdin, never on a command line.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skyk.errors import SkykError
from skyk.provision.types import ClusterHandle
from skyk.state import storage
from skyk.storage.plan import BucketMount, bucket_mounts
from skyk.storage.store import BucketRef, Store, StoreError

#: seconds one node may take to copy its COPY buckets and mount the others
MOUNT_TIMEOUT = 3600
#: seconds one node may take to flush its mounts' writes and unmount them
UNMOUNT_TIMEOUT = 900


def uses_buckets(task) -> bool:
    """Whether any ``file_mounts`` entry of ``task`` is a bucket (so store plugins must be asked)."""
    from skyk.spec.storage import StorageObject, is_url

    return any(isinstance(s, StorageObject) or is_url(s) for s in task.file_mounts.values())


def installed_stores() -> dict[str, Store]:
    """The stores of the installed cloud plugins, by name."""
    from skyk.plugins.manager import Kernel

    return Kernel.load(("cloud",)).stores()


def plan(task, cloud: str) -> list[BucketMount]:
    """The task's bucket mounts on ``cloud``, checked (see :func:`skyk.storage.plan.bucket_mounts`)."""
    if not uses_buckets(task):
        return []
    return bucket_mounts(task, cloud, installed_stores())


def attach(conn: sqlite3.Connection, handle: ClusterHandle, mounts: list[BucketMount]) -> None:
    """Make and fill the buckets skyk makes, then mount (or copy) every bucket on every node."""
    for mount in mounts:
        if mount.create:
            _make(conn, handle, mount)
    storage.add_mounts(conn, handle.cluster, [storage.MountRecord(m.dest, m.store.name, m.ref.bucket,
                                                                  m.ref.prefix, m.mode) for m in mounts])
    _mount_on_nodes(handle, mounts)


def remount(conn: sqlite3.Connection, handle: ClusterHandle) -> None:
    """Mount a started cluster's buckets again (COPY buckets stayed on the disks)."""
    records = [r for r in storage.mounts(conn, handle.cluster) if r.mode != "COPY"]
    if not records:
        return
    stores = installed_stores()
    mounts = []
    for record in records:
        store = stores.get(record.store)
        if store is None:
            raise SkykError(f"cluster {handle.cluster}: {record.dest} mounts a bucket of store"
                            f" {record.store}, which is not installed",
                            hint="install its cloud plugin again, or 'skyk down' the cluster")
        mounts.append(BucketMount(record.dest, store, BucketRef(record.store, record.bucket, record.prefix),
                                  record.mode))
    _mount_on_nodes(handle, mounts)


def detach(conn: sqlite3.Connection, handle: ClusterHandle) -> None:
    """Flush every running node's mounts and unmount them, so no write is lost; ``SkykError`` if one cannot.

    Nodes the cloud does not report running are skipped: what they hold is out of reach anyway.
    """
    if not any(r.mode != "COPY" for r in storage.mounts(conn, handle.cluster)):
        return
    from skyk.lifecycle.lookup import cloud_of

    states = cloud_of(handle.cloud).query(handle)
    running = [rank for rank, state in enumerate(states) if state == "running"]
    errors = _on_nodes(handle, lambda client: client.unmount(), UNMOUNT_TIMEOUT, running)
    if errors:
        raise SkykError(f"cluster {handle.cluster}: writes to a bucket were not flushed: {errors[0]}",
                        hint="its nodes are left as they are, with the writes; try again, or"
                             " 'skyk down --purge' to give them up")


def release(conn: sqlite3.Connection, cluster: str) -> None:
    """Delete the buckets skyk made for ``cluster`` that are not persistent.

    One that another cluster still mounts (replicas of one service share their
    task's buckets) passes to that cluster instead, and goes with the last.
    """
    records = storage.of_cluster(conn, cluster)
    if not records:
        return
    stores = installed_stores()
    for record in records:
        others = [c for c in storage.users(conn, record.store, record.name) if c != cluster]
        if others:
            storage.set_cluster(conn, record.store, record.name, others[0])
        else:
            delete(conn, stores, record)


def delete(conn: sqlite3.Connection, stores: dict[str, Store], record: storage.StorageRecord) -> None:
    """Delete a bucket skyk made, and forget it; ``SkykError`` (the record kept) if the store refuses."""
    store = stores.get(record.store)
    if store is None:
        raise SkykError(f"bucket {record.name}: its store {record.store} is not installed",
                        hint="install its cloud plugin again to delete it")
    try:
        store.delete(record.name)
    except StoreError as exc:
        storage.set_status(conn, record.store, record.name, storage.DELETE_FAILED)
        raise SkykError(f"deleting bucket {record.name} ({store.name}): {exc}", hint=exc.hint) from None
    storage.remove(conn, record.store, record.name)


def _make(conn: sqlite3.Connection, handle: ClusterHandle, mount: BucketMount) -> None:
    store, bucket = mount.store, mount.ref.bucket
    try:
        made = not store.exists(bucket)
        if made:
            region = handle.region if store.cloud == handle.cloud else None
            # Recorded before it is asked for: a launch killed now still lists it.
            storage.add(conn, store.name, bucket, [str(p) for p in mount.sources], region,
                        mount.persistent, handle.cluster)
            store.create(bucket, region)
        for source, ref in _uploads(mount):
            store.upload(source, ref)
    except StoreError as exc:
        if storage.get(conn, store.name, bucket) is not None:
            storage.set_status(conn, store.name, bucket, storage.UPLOAD_FAILED)
        raise SkykError(f"file_mounts.{mount.dest}: bucket {bucket}: {exc}", hint=exc.hint) from None
    if made:
        storage.set_status(conn, store.name, bucket, storage.READY)


def _uploads(mount: BucketMount) -> list[tuple[Path, BucketRef]]:
    """Where each local source goes: one folder's contents at the bucket's root, else each by its name."""
    root = BucketRef(mount.store.name, mount.ref.bucket)
    if len(mount.sources) == 1 and mount.sources[0].is_dir():
        return [(mount.sources[0], root)]
    return [(s, BucketRef(root.store, root.bucket, s.name) if s.is_dir() else root) for s in mount.sources]


def node_spec(mounts: list[BucketMount]) -> dict:
    """What the agent's ``mount`` reads: a remote per bucket, and the mounts."""
    remotes, entries = {}, []
    for mount in mounts:
        remote = f"{mount.store.name}-{mount.ref.bucket}"
        if remote not in remotes:
            remotes[remote] = mount.store.node_access(mount.ref.bucket).as_json()
        entries.append({"dest": mount.dest, "remote": remote, "path": mount.ref.path, "mode": mount.mode})
    return {"remotes": remotes, "mounts": entries}


def _mount_on_nodes(handle: ClusterHandle, mounts: list[BucketMount]) -> None:
    spec = node_spec(mounts)
    head = handle.head.runner
    if head.get("kind") == "local" and head.get("netns"):
        # Local nodes in network namespaces: every job, a worker's too, starts in
        # the head daemon's mount namespace, so each node mounts there.
        from skyk.lifecycle.lookup import head_client

        health = head_client(handle).health() or {}
        if isinstance(health.get("pid"), int):
            spec["jobs_daemon"] = health["pid"]

    def mount(client) -> None:
        client.install()
        client.mount(spec)

    errors = _on_nodes(handle, mount, MOUNT_TIMEOUT)
    if errors:
        raise SkykError(f"cluster {handle.cluster}: mounting buckets failed: {errors[0]}",
                        hint=f"fix the bucket or its access and launch again; 'skyk down {handle.cluster}'"
                             " removes the cluster")


def _on_nodes(handle: ClusterHandle, action, timeout: float, ranks: list[int] | None = None) -> list[str]:
    """Run ``action(agent client)`` on the nodes ``ranks`` (all) at once; return failures as ``node N: why``."""
    from skyk.agent.client import AgentClient, AgentError
    from skyk.agent.runners import RunnerError, runner_from_spec

    def one(rank: int) -> str | None:
        try:
            action(AgentClient(runner_from_spec(handle.nodes[rank].runner), timeout=timeout))
        except (AgentError, RunnerError, OSError) as exc:
            return f"node {rank}: {exc}"
        return None

    ranks = list(range(len(handle.nodes))) if ranks is None else ranks
    if not ranks:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(ranks))) as pool:
        return [e for e in pool.map(one, ranks) if e]
