"""Storage objects in ``file_mounts``: buckets a task mounts, copies or fills, as SkyPilot writes them.

A ``file_mounts`` value is a local path, a bucket URL (``s3://``, ``gs://``,
``https://ACCOUNT.blob.core.windows.net/CONTAINER``: copied onto the nodes),
or a storage object::

    /data:
      name: my-bucket          # the bucket; made in the user's account if it does not exist
      source: ./data           # local path(s) uploaded into it, or a bucket URL to mount
      store: s3                # s3 | gcs | azure; default: the store of the cloud the task runs on
      mode: MOUNT              # MOUNT | COPY | MOUNT_CACHED
      persistent: true         # false: deleted with the cluster

Only the shape is checked here; which store reads a URL, and whether a
bucket exists, are asked of the cloud plugins before anything is provisioned
(:mod:`skyk.storage.plan`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Tag, field_validator, model_validator

from skyk.spec.base import SpecModel
from skyk.spec.values import check_path

#: How a bucket reaches the nodes, as SkyPilot names the modes.
MODES = ("MOUNT", "COPY", "MOUNT_CACHED")
#: Stores SkyPilot knows; skyk's cloud plugins provide the first three.
KNOWN_STORES = ("s3", "gcs", "azure", "r2", "ibm", "oci", "nebius", "cos")
#: URL schemes of buckets (a URL source is never a local path).
URL_SCHEMES = ("s3://", "gs://", "r2://", "cos://", "oci://", "nebius://", "https://", "http://", "az://")


def is_url(source: str) -> bool:
    """Whether a ``file_mounts`` source names a bucket (or other remote) rather than a local path."""
    return source.startswith(URL_SCHEMES)


class StorageObject(SpecModel):
    """One storage object of ``file_mounts``."""

    name: str | None = None
    source: str | list[str] | None = None
    store: str | None = None
    mode: str = "MOUNT"
    persistent: bool = True
    #: SkyPilot's per-store options (``config: {azure: {storage_account: ...}}``): accepted, not used.
    config: dict[str, Any] | None = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in MODES:
            return value.upper()
        if isinstance(value, str):
            raise ValueError(f"unknown mode {value!r} | hint: use one of {', '.join(MODES)}")
        return value

    @field_validator("store", mode="before")
    @classmethod
    def _store(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lower() not in KNOWN_STORES:
                raise ValueError(f"unknown store {value!r} | hint: use one of s3, gcs, azure")
            return value.lower()
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("source is an empty list | hint: name a local path, or leave source out")
            for item in value:
                if is_url(item):
                    raise ValueError(f"source list holds the URL {item!r}; a list holds local paths only"
                                     " | hint: mount each bucket under a destination of its own")
                check_path(item, "storage source", local=True)
        elif isinstance(value, str):
            check_path(value, "storage source", local=not is_url(value))
        return value

    @model_validator(mode="after")
    def _whole(self) -> StorageObject:
        if self.name is None and self.source is None:
            raise ValueError("a storage object needs a name (the bucket) or a source"
                             " | hint: add name: my-bucket, or source: s3://bucket/dir")
        if self.name is not None and isinstance(self.source, str) and is_url(self.source):
            raise ValueError(f"name {self.name!r} and the bucket URL {self.source!r} both name a bucket"
                             " | hint: leave out name (the URL names the bucket), or use a local source")
        if self.name is None and not (isinstance(self.source, str) and is_url(self.source)):
            raise ValueError("a storage object with a local source needs a name: the bucket it is"
                             " uploaded to | hint: add name: my-bucket")
        return self

    @property
    def url(self) -> str | None:
        """The bucket URL this object mounts, when its source is one."""
        return self.source if isinstance(self.source, str) and is_url(self.source) else None

    @property
    def local_sources(self) -> list[str]:
        """The local paths this object uploads (none when the source is a URL or absent)."""
        if self.source is None or self.url is not None:
            return []
        return [self.source] if isinstance(self.source, str) else list(self.source)


def _kind(value: Any) -> str:
    # A mapping is a storage object; anything else is checked as a path, so
    # errors come from the one form the user meant, not from both.
    return "storage-object" if isinstance(value, dict | StorageObject) else "mount-path"


#: A ``file_mounts`` value: a local path or bucket URL, or a storage object.
MountSource = Annotated[Annotated[str, Tag("mount-path")] | Annotated[StorageObject, Tag("storage-object")],
                        Discriminator(_kind)]
