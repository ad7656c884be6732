"""Azure Blob storage as a skyk store: containers of one storage account.

The account, its Blob endpoint and its key come from the environment
(:mod:`skyk_azure.blob_account`); the SDK (azure-storage-blob) is imported
only inside the verbs that talk to the service. Containers skyk creates
carry the metadata ``skyk_managed=true`` (Azure's metadata names are C#
identifiers: no hyphen).

A node gets no account key: it gets a shared access signature (SAS) for
the account's Blob service, signed here with the key, and rclone reaches the
containers at the same endpoint the SDK uses. A SAS URL is a full URL, so it
reaches any endpoint (another Azure cloud, Azure Stack, an emulator) with
every rclone release; the key-and-``endpoint`` form means a host suffix in
some releases and a full URL in others. The SAS covers the account's
containers, not one: a node has one rclone remote per store (``azure``),
which serves every container its task uses.
"""

from __future__ import annotations

import datetime
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from skyk.errors import printable
from skyk.provision.cloud import CredentialCheck
from skyk.storage.store import BucketRef, NodeAccess, Store, StoreError

from skyk_azure import blob_account, blob_names

#: metadata every container skyk creates carries
MANAGED_METADATA = {"skyk_managed": "true"}
#: how many days a node's SAS stays valid, unless SKYK_AZURE_SAS_DAYS says otherwise
SAS_DAYS_ENV = "SKYK_AZURE_SAS_DAYS"
DEFAULT_SAS_DAYS = 30
#: a SAS starts this long before now, so a node whose clock is a little behind accepts it
_CLOCK_SKEW = datetime.timedelta(minutes=15)
#: files uploaded at once; each blob upload also splits large files into parallel blocks
_UPLOAD_THREADS = 8
_BLOCK_THREADS = 4


class AzureBlobStore(Store):
    """Containers of the storage account the environment names."""

    name: ClassVar[str] = "azure"
    cloud: ClassVar[str] = "azure"
    display_name: ClassVar[str] = "Azure Blob"

    # -- names (no network) -------------------------------------------------------------

    def parse_url(self, url: str) -> BucketRef | None:
        try:
            parsed = blob_names.parse(url)
        except blob_names.BlobURLError as exc:
            raise StoreError(str(exc), code="InvalidUri") from None
        if parsed is None:
            return None
        try:
            configured = blob_account.from_environment().name
        except blob_account.AccountError:
            configured = None  # check_credentials reports it before anything is made
        if configured and configured != parsed.account:
            raise StoreError(
                f"{printable(url)} is in the storage account {parsed.account}, but skyk"
                f" uses the account {configured}", code="AccountMismatch",
                hint="point AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT and"
                     f" AZURE_STORAGE_KEY) at the account {parsed.account}")
        return BucketRef(self.name, parsed.container, parsed.prefix)

    def url(self, ref: BucketRef) -> str:
        account = self._account()
        host = urlsplit(account.endpoint).hostname or ""
        suffix = next((s for s in blob_names.SUFFIXES if host.endswith(f".blob.{s}")),
                      blob_names.SUFFIXES[0])
        return blob_names.url(account.name, ref.bucket, ref.prefix, suffix)

    def check_name(self, bucket: str) -> str | None:
        return blob_names.container_problem(bucket)

    def check_credentials(self) -> CredentialCheck:
        return blob_account.check()

    # -- verbs ----------------------------------------------------------------------------

    def exists(self, bucket: str) -> bool:
        with self._errors(f"container {bucket}"):
            return self._container(bucket).exists()

    def create(self, bucket: str, region: str | None) -> None:
        """Create the container; ``region`` is ignored: a container lives in its account's region."""
        problem = self.check_name(bucket)
        if problem:
            raise StoreError(problem, code="InvalidResourceName")
        with self._errors(f"container {bucket}"):
            self._container(bucket).create_container(metadata=MANAGED_METADATA)

    def delete(self, bucket: str) -> None:
        """Delete the container; Azure deletes its blobs with it. One already gone is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._errors(f"container {bucket}"):
            try:
                self._container(bucket).delete_container()
            except ResourceNotFoundError:
                pass

    def upload(self, source: Path, dest: BucketRef) -> None:
        source = Path(source)
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file())
            names = [p.relative_to(source).as_posix() for p in files]
        elif source.is_file():
            files, names = [source], [source.name]
        else:
            raise StoreError(f"cannot upload {source}: no such file or directory")
        container = self._container(dest.bucket)

        def put(item: tuple[Path, str]) -> None:
            path, name = item
            blob = f"{dest.prefix}/{name}" if dest.prefix else name
            with self._errors(f"object {dest.bucket}/{blob}"), open(path, "rb") as data:
                container.upload_blob(blob, data, overwrite=True, max_concurrency=_BLOCK_THREADS)

        with ThreadPoolExecutor(max_workers=_UPLOAD_THREADS) as pool:
            list(pool.map(put, zip(files, names, strict=True)))

    def list_objects(self, ref: BucketRef) -> list[str]:
        start = f"{ref.prefix}/" if ref.prefix else ""
        with self._errors(f"container {ref.bucket}"):
            names = self._container(ref.bucket).list_blob_names(name_starts_with=start or None)
            return sorted(name[len(start):] for name in names)

    def read_object(self, ref: BucketRef, key: str) -> bytes:
        blob = f"{ref.prefix}/{key}" if ref.prefix else key
        with self._errors(f"object {ref.bucket}/{blob}"):
            return self._container(ref.bucket).download_blob(blob).readall()

    def node_access(self, bucket: str) -> NodeAccess:
        """An rclone ``azureblob`` remote holding a SAS URL of the account's Blob service.

        The SAS (an account SAS) lets rclone read, write, list and delete blobs
        in containers it names, and nothing else: not the account's other
        services (files, queues, tables), not its settings, not the list of
        its containers. It expires after :data:`DEFAULT_SAS_DAYS` days
        (``SKYK_AZURE_SAS_DAYS``) and is signed here with the account key, so
        nothing is asked of the network. ``bucket`` needs nothing of its own:
        one remote serves every container of a task.
        """
        from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

        account = self._account()
        now = datetime.datetime.now(datetime.timezone.utc)
        token = generate_account_sas(
            account.name, account.key, ResourceTypes(container=True, object=True),
            AccountSasPermissions(read=True, add=True, create=True, write=True, delete=True,
                                  list=True),
            start=now - _CLOCK_SKEW, expiry=now + datetime.timedelta(days=_sas_days()),
            services="b")
        return NodeAccess(remote={"type": "azureblob", "sas_url": f"{account.endpoint}?{token}"})

    # -- helpers --------------------------------------------------------------------------

    def _account(self) -> blob_account.BlobAccount:
        try:
            return blob_account.from_environment()
        except blob_account.AccountError as exc:
            raise StoreError(f"Azure Blob: {exc}", code="NoCredentials", hint=exc.hint) from None

    def _container(self, bucket: str):
        return blob_account.service_client(self._account()).get_container_client(bucket)

    def _errors(self, what: str):
        from skyk_azure.errors import storage_errors

        return storage_errors(what)


def _sas_days() -> float:
    raw = os.environ.get(SAS_DAYS_ENV, "").strip()
    if not raw:
        return DEFAULT_SAS_DAYS
    try:
        days = float(raw)
    except ValueError:
        days = 0.0
    if not days > 0:
        raise StoreError(f"{SAS_DAYS_ENV}={raw!r} is not a positive number of days",
                         code="InvalidInput", hint=f"unset it for {DEFAULT_SAS_DAYS} days")
    return days
