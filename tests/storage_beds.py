"""The three storage emulators at once, for end-to-end bucket tests: moto's S3, a GCS emulator, Azurite.

:class:`StorageBed` starts them on one address (loopback, or a bridge that
node twins reach), gives the environment that points skyk at all three,
and puts and reads objects with each store's own SDK, never through skyk.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil

from fakecloud import Azurite, FakeGCS, FakeS3
from fakecloud.azurite import program as azurite_program
from fakecloud.tools import missing_tool


def require_storage_tools() -> None:
    """Skip (fail under CI) unless rclone, fusermount3 and Azurite are here."""
    missing = [tool for tool, found in (("rclone", shutil.which("rclone")),
                                        ("fusermount3", shutil.which("fusermount3")),
                                        ("azurite-blob", azurite_program())) if not found]
    if missing:
        missing_tool(f"missing {', '.join(missing)} (.ci/run and dev/install install them)")


class StorageBed(contextlib.ExitStack):
    """S3, GCS and Azure Blob emulators on ``host``; S3 takes ``s3_keys`` (a FakeEC2's, say) if given."""

    def __init__(self, host: str = "127.0.0.1", s3_keys: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.host = host
        self.s3_keys = s3_keys or (None, None)

    def __enter__(self) -> StorageBed:
        super().__enter__()
        require_storage_tools()
        self.s3 = self.enter_context(FakeS3(host=self.host, access_key=self.s3_keys[0],
                                            secret_key=self.s3_keys[1]))
        self.gcs = self.enter_context(FakeGCS(host=self.host))
        self.azure = self.enter_context(Azurite(self.host))
        return self

    def env(self) -> dict[str, str]:
        """What points skyk (and the SDKs) at the three emulators."""
        return {**self.s3.env(), **self.gcs.env(), **self.azure.env()}

    def _blob(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.azure.connection_string())

    def make(self, store: str, bucket: str) -> None:
        """Create a bucket (container) with the store's own SDK."""
        if store == "s3":
            self.s3.client().create_bucket(Bucket=bucket)
        elif store == "gcs":
            self.gcs.client().create_bucket(bucket)
        else:
            self._blob().create_container(bucket)

    def put(self, store: str, bucket: str, key: str, data: bytes) -> None:
        """Write an object."""
        if store == "s3":
            self.s3.client().put_object(Bucket=bucket, Key=key, Body=data)
        elif store == "gcs":
            self.gcs.client().bucket(bucket).blob(key).upload_from_string(data)
        else:
            self._blob().get_blob_client(bucket, key).upload_blob(data, overwrite=True)

    def get(self, store: str, bucket: str, key: str) -> bytes:
        """Read an object."""
        if store == "s3":
            return self.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        if store == "gcs":
            return self.gcs.client().bucket(bucket).blob(key).download_as_bytes()
        return self._blob().get_blob_client(bucket, key).download_blob().readall()

    def exists(self, store: str, bucket: str) -> bool:
        """Whether the bucket (container) exists."""
        if store == "s3":
            names = [b["Name"] for b in self.s3.client().list_buckets().get("Buckets", [])]
            return bucket in names
        if store == "gcs":
            return self.gcs.client().lookup_bucket(bucket) is not None
        return self._blob().get_container_client(bucket).exists()

    def keys(self, store: str, bucket: str, prefix: str = "") -> list[str]:
        """The object keys under ``prefix``, sorted."""
        if store == "s3":
            found = self.s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
            return sorted(o["Key"] for o in found)
        if store == "gcs":
            return sorted(b.name for b in self.gcs.client().list_blobs(bucket, prefix=prefix))
        return sorted(b.name for b in self._blob().get_container_client(bucket)
                      .list_blobs(name_starts_with=prefix))


#: Azure Blob URLs name the account; the store maps the development account to Azurite.
AZURE_URL = "https://devstoreaccount1.blob.core.windows.net"


def three_buckets(bed: StorageBed, prefix: str) -> dict[str, str]:
    """Make an S3 bucket, a GCS bucket and an Azure container, each with ``PREFIX/hello.txt``."""
    made = {store: f"skyk-{store[:2]}-{secrets.token_hex(3)}" for store in ("s3", "gcs", "azure")}
    for store, bucket in made.items():
        bed.make(store, bucket)
        bed.put(store, bucket, f"{prefix}/hello.txt", f"hello from {store}\n".encode())
    return made


def three_store_task(buckets: dict[str, str], prefix: str, head: str, write: str) -> str:
    """A task mounting ``buckets`` (S3 MOUNT, GCS COPY, Azure MOUNT_CACHED) at ~/s3, ~/gcs and ~/az.

    Its run reads each bucket's ``hello.txt`` and writes ``write`` (a shell word)
    to ``node-RANK.txt`` through the S3 and Azure mounts. ``head`` goes first.
    """
    return f"""\
{head}file_mounts:
  ~/s3:
    source: s3://{buckets["s3"]}/{prefix}
    mode: MOUNT
  ~/gcs: gs://{buckets["gcs"]}/{prefix}
  ~/az:
    source: {AZURE_URL}/{buckets["azure"]}/{prefix}
    mode: MOUNT_CACHED
run: |
  cat ~/s3/hello.txt ~/gcs/hello.txt ~/az/hello.txt
  echo "{write}" > ~/s3/node-$SKYK_NODE_RANK.txt
  echo "{write}" > ~/az/node-$SKYK_NODE_RANK.txt
"""


def launch_and_check_three(cli, bed: StorageBed, buckets: dict[str, str], prefix: str, cluster: str,
                           launch_args: tuple[str, ...], written) -> None:
    """Launch a 2-node :func:`three_store_task` as ``cluster``, check both nodes read every bucket,
    take it down, and check each node's write (``written(rank)``) reached S3 and Azure."""
    launched = cli("launch", "-c", cluster, *launch_args, "-y", timeout=600)
    assert launched.returncode == 0, launched.stderr
    for store in ("s3", "gcs", "azure"):
        assert launched.stdout.count(f"hello from {store}") == 2, launched.stdout
    down = cli("down", cluster, "-y", timeout=600)
    assert down.returncode == 0, down.stderr
    for rank in (0, 1):
        for store in ("s3", "azure"):
            assert bed.get(store, buckets[store], f"{prefix}/node-{rank}.txt") == f"{written(rank)}\n".encode()
