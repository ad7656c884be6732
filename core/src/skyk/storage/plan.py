"""From a task's ``file_mounts`` to the buckets it mounts, checked before anything is provisioned.

Every bucket URL is given to the store that reads it, every storage object
to the store it names (or to the store of the cloud the task runs on). Then,
still before any node exists: the store's plugin is installed, its
credentials are present, bucket names keep the store's rules, and a bucket
a URL names exists. Each failure is one line naming the ``file_mounts``
entry, with a hint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skyk.errors import SkykError
from skyk.storage.store import BucketRef, Store, StoreError

if TYPE_CHECKING:
    from skyk.spec.storage import StorageObject

#: How each plugin's store is called in hints, by store name.
_PLUGIN = {"s3": "aws", "gcs": "gcp", "azure": "azure"}


@dataclass(frozen=True)
class BucketMount:
    """One bucket a task puts on its nodes."""

    dest: str
    store: Store
    ref: BucketRef
    #: MOUNT, COPY or MOUNT_CACHED
    mode: str
    #: local paths uploaded into the bucket first (absolute)
    sources: tuple[Path, ...] = ()
    #: a storage object that names its bucket: made if it does not exist
    create: bool = False
    persistent: bool = True


def bucket_mounts(task, cloud: str | None, stores: dict[str, Store]) -> list[BucketMount]:
    """Return the bucket mounts of ``task``, resolved and checked; raise ``SkykError`` otherwise.

    ``cloud`` is the cloud the task will run on (its store is the default for
    storage objects that name none); ``stores`` are the installed stores by
    name. Asks each store whether the buckets that URLs name exist.
    """
    from skyk.spec.storage import is_url

    mounts = []
    for dest, source in task.file_mounts.items():
        where = f"{task.source}: file_mounts.{dest}"
        if isinstance(source, str):
            if is_url(source):
                mounts.append(_from_url(where, dest, source, "COPY", stores))
            continue
        mounts.append(_from_object(where, dest, source, cloud, stores))
    for mount in mounts:
        _check_access(f"{task.source}: file_mounts.{mount.dest}", mount)
    return mounts


def _from_url(where: str, dest: str, url: str, mode: str, stores: dict[str, Store]) -> BucketMount:
    for store in stores.values():
        ref = store.parse_url(url)
        if ref is not None:
            return BucketMount(dest, store, ref, mode)
    scheme = url.split("://", 1)[0]
    raise SkykError(f"{where}: no installed cloud plugin reads {scheme}:// URLs ({url})",
                    hint="skyk reads s3:// (plugins/aws), gs:// (plugins/gcp) and"
                         " https://ACCOUNT.blob.core.windows.net/ (plugins/azure); from a skyk"
                         " checkout, pip install ./plugins/<cloud>")


def _from_object(where: str, dest: str, obj: StorageObject, cloud: str | None,
                 stores: dict[str, Store]) -> BucketMount:
    if obj.url is not None:
        mount = _from_url(where, dest, obj.url, obj.mode, stores)
        if obj.store is not None and obj.store != mount.store.name:
            raise SkykError(f"{where}: store {obj.store} does not read {obj.url}",
                            hint=f"leave out store (the URL says it is {mount.store.name}), or fix the URL")
        return BucketMount(dest, mount.store, mount.ref, obj.mode, persistent=obj.persistent)
    store = _store_for(where, obj.store, cloud, stores)
    reason = store.check_name(obj.name)
    if reason:
        raise SkykError(f"{where}: bucket name {obj.name!r} breaks {store.display_name or store.name}'s"
                        f" naming rules: {reason}", hint="pick another name")
    sources = tuple(Path(p).expanduser().resolve() for p in obj.local_sources)
    return BucketMount(dest, store, BucketRef(store.name, obj.name), obj.mode, sources, create=True,
                       persistent=obj.persistent)


def _store_for(where: str, named: str | None, cloud: str | None, stores: dict[str, Store]) -> Store:
    if named is not None:
        if named not in stores:
            plugin = _PLUGIN.get(named)
            raise SkykError(f"{where}: store {named} is not installed",
                            hint=(f"from a skyk checkout, pip install ./plugins/{plugin}" if plugin else
                                  "skyk's cloud plugins provide s3, gcs and azure"))
        return stores[named]
    for store in stores.values():
        if store.cloud == cloud:
            return store
    raise SkykError(f"{where}: the {cloud} cloud keeps no buckets, and the storage object names no store",
                    hint="add store: s3, gcs or azure (with that cloud's credentials)")


def _check_access(where: str, mount: BucketMount) -> None:
    store = mount.store
    check = store.check_credentials()
    if not check.ok:
        raise SkykError(f"{where}: no credentials for {store.display_name or store.name}: {check.reason}",
                        hint=check.hint or f"'skyk check {store.cloud}' says how to set them")
    try:
        # Asked for a bucket skyk makes too: a name another account holds is refused here.
        found = store.exists(mount.ref.bucket)
    except StoreError as exc:
        raise SkykError(f"{where}: {exc}", hint=exc.hint) from None
    if not found and not mount.create:
        raise SkykError(f"{where}: bucket {store.url(BucketRef(store.name, mount.ref.bucket))}"
                        " does not exist", hint="check the URL; a storage object with name: and a"
                                                " local source makes a bucket")
