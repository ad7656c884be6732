"""Contract tests for a cloud plugin's object store, run against the plugin author's storage emulator.

A store proves, against an emulator of its API (moto's S3, a GCS emulator,
Azurite), that it names buckets as its cloud does, creates, fills, lists and
deletes them, and that rclone on a node can read and write a bucket with
exactly what :meth:`~skyk.storage.store.Store.node_access` gives it::

    from skyk.testing import StoreContract

    class TestMyStore(StoreContract):
        store_name = "mystore"
        sample_url = "my://bucket/some/dir"
        sample_ref = BucketRef("mystore", "bucket", "some/dir")
        bad_names = ["UPPER", "a", "with_underscore"]

        @pytest.fixture
        def store_env(self, monkeypatch, my_emulator):
            for key, value in my_emulator.env().items():   # endpoint, credentials
                monkeypatch.setenv(key, value)
            yield my_emulator

The store is pointed at the emulator the way a user would point it at
another endpoint (environment variables): never by a switch of its own. The
rclone tests need the ``rclone`` program; they skip without it unless
``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import pytest

from skyk.agent import rclone
from skyk.plugins.manager import Kernel
from skyk.storage.store import BucketRef, Store


class StoreContract:
    """Subclass this, set the class attributes and override the ``store_env`` fixture."""

    store_name: ClassVar[str]
    #: a URL of this store, and the bucket and prefix it names
    sample_url: ClassVar[str]
    sample_ref: ClassVar[BucketRef]
    #: bucket names the store's rules refuse
    bad_names: ClassVar[list[str]] = []
    #: seconds rclone may take for one small copy
    rclone_timeout: ClassVar[float] = 60.0

    @pytest.fixture
    def store_env(self):
        """Point the plugin at an emulator of its store for the test; override it."""
        pytest.skip("no storage emulator for this plugin: override the store_env fixture")

    @pytest.fixture
    def store(self, store_env, monkeypatch) -> Store:
        """The plugin's store, loaded alone through its cloud plugin's entry point."""
        monkeypatch.delenv("SKYK_DISABLE_PLUGINS", raising=False)
        for store in Kernel.load(("cloud",)).stores().values():
            if store.name == self.store_name:
                return store
        pytest.fail(f"no installed cloud plugin provides the store {self.store_name!r}")

    @pytest.fixture
    def bucket(self, store: Store):
        """A new, empty bucket, deleted after the test."""
        name = f"skyk-contract-{secrets.token_hex(4)}"
        store.create(name, None)
        yield name
        store.delete(name)

    # --------------------------------------------------------------- names

    def test_urls_round_trip(self, store_env, store: Store):
        assert store.parse_url(self.sample_url) == self.sample_ref
        assert store.url(self.sample_ref) == self.sample_url

    def test_other_stores_urls_are_not_this_stores(self, store_env, store: Store):
        for url in ("s3://b/d", "gs://b/d", "https://acct.blob.core.windows.net/c/d", "/local/path"):
            if url.split(":", 1)[0] != self.sample_url.split(":", 1)[0]:
                assert store.parse_url(url) is None, url

    def test_names_breaking_the_rules_are_refused_with_a_reason(self, store_env, store: Store):
        assert store.check_name("skyk-good-name-1") is None
        for bad in self.bad_names:
            reason = store.check_name(bad)
            assert reason, bad

    def test_credentials_from_the_environment_are_found(self, store_env, store: Store):
        assert store.check_credentials().ok

    # --------------------------------------------------------------- verbs

    def test_a_bucket_is_created_filled_listed_and_deleted(self, store: Store, tmp_path: Path):
        name = f"skyk-contract-{secrets.token_hex(4)}"
        assert not store.exists(name)
        store.create(name, None)
        try:
            assert store.exists(name)
            source = tmp_path / "src"
            (source / "sub").mkdir(parents=True)
            (source / "a.txt").write_text("alpha")
            (source / "sub" / "b.txt").write_text("beta")
            store.upload(source, BucketRef(self.store_name, name, "data"))
            store.upload(source / "a.txt", BucketRef(self.store_name, name, "single"))
            ref = BucketRef(self.store_name, name, "data")
            assert store.list_objects(ref) == ["a.txt", "sub/b.txt"]
            assert store.read_object(ref, "sub/b.txt") == b"beta"
            assert store.list_objects(BucketRef(self.store_name, name, "single")) == ["a.txt"]
        finally:
            store.delete(name)
        assert not store.exists(name)

    def test_deleting_a_bucket_already_gone_is_not_an_error(self, store: Store):
        store.delete(f"skyk-contract-{secrets.token_hex(4)}")

    # --------------------------------------------------------------- nodes

    def _rclone(self, store: Store, bucket: str, config_dir: Path, *args: str) -> None:
        program = shutil.which("rclone")
        if program is None:
            if os.environ.get("CI"):
                pytest.fail("rclone is not installed (CI installs it with apt)")
            pytest.skip("rclone is not installed")
        access = {self.store_name: store.node_access(bucket).as_json()}
        config = rclone.write_config(config_dir, access)
        env = rclone.environment(config, access, os.environ)
        result = subprocess.run([program, *args], env=env, capture_output=True, text=True,
                                timeout=self.rclone_timeout)
        assert result.returncode == 0, result.stderr

    def test_rclone_reads_and_writes_the_bucket_with_node_access(self, store: Store, bucket: str,
                                                                 tmp_path: Path):
        source = tmp_path / "src"
        source.mkdir()
        (source / "weights.bin").write_bytes(b"\x00\x01" * 1000)
        store.upload(source, BucketRef(self.store_name, bucket, "in"))
        config_dir = tmp_path / "rclone"
        remote = self.store_name
        self._rclone(store, bucket, config_dir, "copy", f"{remote}:{bucket}/in", str(tmp_path / "out"))
        assert (tmp_path / "out" / "weights.bin").read_bytes() == b"\x00\x01" * 1000
        (tmp_path / "result.txt").write_text("written on a node")
        self._rclone(store, bucket, config_dir, "copyto", str(tmp_path / "result.txt"),
                     f"{remote}:{bucket}/out/result.txt")
        assert store.read_object(BucketRef(self.store_name, bucket, "out"), "result.txt") == b"written on a node"

    def test_node_files_are_readable_by_their_owner_only(self, store: Store, bucket: str, tmp_path: Path):
        access = {self.store_name: store.node_access(bucket).as_json()}
        config_dir = tmp_path / "rclone"
        rclone.write_config(config_dir, access)
        for path in [config_dir, *config_dir.rglob("*")]:
            mode = path.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{path} is mode {oct(mode)}"
