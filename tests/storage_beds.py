"""The three storage emulators at once, for end-to-end bucket tests: moto's S3, a GCS emulator, Azurite.

:class:`StorageBed` starts them on one address (loopback, or a bridge that
node twins reach), gives the environment that points skyk at all three,
and puts and reads objects with each store's own SDK, never through skyk.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest
from fakecloud import Azurite, FakeGCS, FakeS3
from fakecloud.azurite import program as azurite_program


def require_storage_tools() -> None:
    """Skip (fail under CI) unless rclone, fusermount3 and Azurite are here."""
    missing = [tool for tool, found in (("rclone", shutil.which("rclone")),
                                        ("fusermount3", shutil.which("fusermount3")),
                                        ("azurite-blob", azurite_program())) if not found]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"missing {', '.join(missing)} (.ci/run and dev/install install them)")
        pytest.skip(f"missing {', '.join(missing)}")


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
