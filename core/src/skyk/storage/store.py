"""The interface a cloud plugin implements to provide an object store (S3, GCS, Azure Blob).

Core never imports a storage SDK: every verb that talks to a store goes
through a :class:`Store` from the ``skyk_stores`` hook. Nodes reach a store
with rclone, so a store also says how rclone on a node gets to a bucket
(:meth:`Store.node_access`): a remote's configuration, and the secret files
it refers to, which skyk writes on the node readable by its user only
(:meth:`NodeAccess.as_json` is how it travels to the node's agent).
"""

from __future__ import annotations

import abc
import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from skyk.provision.cloud import CredentialCheck


@dataclass(frozen=True)
class BucketRef:
    """A place in a store: a bucket (or container) and a prefix inside it.

    ``prefix`` has no leading or trailing slash; empty means the whole bucket.
    """

    store: str
    bucket: str
    prefix: str = ""

    @property
    def path(self) -> str:
        """Return ``bucket[/prefix]``, the path rclone names after the remote."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket


@dataclass(frozen=True)
class NodeAccess:
    """What rclone on a node needs to reach one store.

    ``remote`` is an rclone remote's section (``{"type": "s3", "provider":
    "AWS", ...}``); option values may name a file of ``files`` as
    ``{files}/NAME``, which skyk replaces with the absolute path where it
    wrote that file on the node. ``files`` holds secret file contents (a
    service-account key, say); ``env`` holds environment variables that
    rclone needs and that are not secrets (secrets belong in ``remote`` or
    ``files``, which skyk writes with mode 0600 and never passes in argv).
    ``unset_env`` names variables of the node that must not reach rclone
    (``AWS_CA_BUNDLE`` points rclone's S3 backend at a file it may refuse).
    """

    # Both hold secrets: kept out of repr, so no log line or test failure prints them.
    remote: dict[str, str] = field(repr=False)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    env: dict[str, str] = field(default_factory=dict)
    unset_env: tuple[str, ...] = ()

    def as_json(self) -> dict:
        """Return the JSON form the node agent's rclone writer takes (file contents in base64)."""
        return {"remote": dict(self.remote),
                "files": {name: base64.b64encode(content).decode("ascii")
                          for name, content in self.files.items()},
                "env": dict(self.env), "unset_env": list(self.unset_env)}


class StoreError(Exception):
    """A store refused a request; ``code`` is the store's error code, ``hint`` what to do."""

    def __init__(self, message: str, *, code: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


class Store(abc.ABC):
    """An object store a cloud plugin provides.

    Subclasses set ``name`` (as users write it in ``store:``: ``s3``,
    ``gcs``, ``azure``) and ``cloud`` (the cloud whose tasks keep their
    buckets here by default), and implement the verbs; :meth:`parse_url`
    says which URLs are the store's. Verbs other than :meth:`parse_url`,
    :meth:`check_name` and :meth:`check_credentials` use the network and
    raise :class:`StoreError` with the store's own error code on failure.
    """

    name: ClassVar[str]
    cloud: ClassVar[str]
    #: how tables name the store to people (``S3``, ``GCS``, ``Azure Blob``)
    display_name: ClassVar[str] = ""

    @abc.abstractmethod
    def parse_url(self, url: str) -> BucketRef | None:
        """Return the bucket and prefix ``url`` names, or ``None`` if it is not this store's URL.

        ``s3://bucket/dir``, ``gs://bucket/dir``,
        ``https://ACCOUNT.blob.core.windows.net/CONTAINER/dir``. No network.
        """

    @abc.abstractmethod
    def url(self, ref: BucketRef) -> str:
        """Return the URL a user would write for ``ref`` (the inverse of :meth:`parse_url`)."""

    @abc.abstractmethod
    def check_name(self, bucket: str) -> str | None:
        """Return why ``bucket`` breaks this store's naming rules, or ``None`` if it is valid. No network."""

    @abc.abstractmethod
    def check_credentials(self) -> CredentialCheck:
        """Return whether credentials for this store are present and well formed. No network."""

    @abc.abstractmethod
    def exists(self, bucket: str) -> bool:
        """Return whether ``bucket`` exists and these credentials can reach it."""

    @abc.abstractmethod
    def create(self, bucket: str, region: str | None) -> None:
        """Create ``bucket`` in ``region`` (the store's default where ``None``); tag or label it as skyk's."""

    @abc.abstractmethod
    def delete(self, bucket: str) -> None:
        """Delete every object of ``bucket``, then the bucket. A bucket already gone is not an error."""

    @abc.abstractmethod
    def upload(self, source: Path, dest: BucketRef) -> None:
        """Copy the local file or directory ``source`` to ``dest`` (a directory's contents, recursively)."""

    @abc.abstractmethod
    def list_objects(self, ref: BucketRef) -> list[str]:
        """Return the object keys under ``ref``, relative to its prefix, sorted."""

    @abc.abstractmethod
    def read_object(self, ref: BucketRef, key: str) -> bytes:
        """Return the contents of object ``key`` under ``ref``."""

    @abc.abstractmethod
    def node_access(self, bucket: str) -> NodeAccess:
        """Return what rclone on a node needs to read and write ``bucket``.

        Gives the least the node needs: credentials for this store only, and
        preferably none at all where the node can use what the cloud gives
        it (an instance role). No network.
        """
