"""The GCS store: the store contract against the GCS emulator, names, errors and labels."""

from __future__ import annotations

import importlib.util
import json
import secrets

import pytest
from fakecloud.tools import missing_tool
from skyk.storage.store import BucketRef, StoreError
from skyk.testing import StoreContract
from skyk_gcp.store import GCSStore


@pytest.fixture(scope="module")
def emulator():
    from fakecloud import FakeGCS

    if importlib.util.find_spec("gcp_storage_emulator") is None:
        missing_tool("gcp-storage-emulator is not installed (dev/install installs it)")
    with FakeGCS() as fake:
        yield fake


@pytest.fixture
def gcs_env(monkeypatch, emulator):
    """Point the plugin at the emulator, as a user would (its variables only)."""
    for name in ("CLOUDSDK_CONFIG", "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"):
        monkeypatch.delenv(name, raising=False)
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    return emulator


class TestGCSStoreContract(StoreContract):
    store_name = "gcs"
    sample_url = "gs://skyk-data/some/dir"
    sample_ref = BucketRef("gcs", "skyk-data", "some/dir")
    bad_names = ["UPPER", "ab", "-dash-first", "goog-data", "my-google-bucket", "192.168.5.4",
                 "a" * 64, "with space", "dot-last."]

    @pytest.fixture
    def store_env(self, gcs_env):
        yield gcs_env

    def test_rclone_writes_a_file_in_chunks(self, store, bucket, tmp_path):
        # Over rclone's 16 MiB chunk: a resumable upload of several requests.
        content = secrets.token_bytes(1024) * (17 * 1024)
        (tmp_path / "big.bin").write_bytes(content)
        self._rclone(store, bucket, tmp_path / "rclone", "copyto", str(tmp_path / "big.bin"),
                     f"gcs:{bucket}/out/big.bin")
        assert store.read_object(BucketRef("gcs", bucket, "out"), "big.bin") == content


# -- URLs and names (no network) --------------------------------------------------------------

@pytest.mark.parametrize("url, bucket, prefix", [
    ("gs://b1b", "b1b", ""),
    ("gs://b1b/", "b1b", ""),
    ("gs://b1b/dir/", "b1b", "dir"),
    ("gs://b1b//a//b/", "b1b", "a/b"),
    ("GS://b1b/Dir", "b1b", "Dir"),
    ("gs://my.bucket.example/x y/z", "my.bucket.example", "x y/z"),
])
def test_urls_name_a_bucket_and_a_prefix(url, bucket, prefix):
    assert GCSStore().parse_url(url) == BucketRef("gcs", bucket, prefix)


@pytest.mark.parametrize("url", ["gs:/b/d", "gcs://b/d", "s3://b/d", "/b/d", "b/d", ""])
def test_other_urls_are_not_gcs(url):
    assert GCSStore().parse_url(url) is None


def test_a_url_without_a_bucket_names_one_that_breaks_the_rules():
    store = GCSStore()
    assert store.check_name(store.parse_url("gs://").bucket)


@pytest.mark.parametrize("name", ["abc", "a-b_c.d", "1bucket9", "a" * 63,
                                  ".".join(["a" * 63] * 3) + ".abcd", "my.gogle.ok"])
def test_names_within_the_rules(name):
    assert GCSStore().check_name(name) is None


@pytest.mark.parametrize("name, why", [
    ("", "needs a name"),
    ("ab", "3 to 63"),
    ("a" * 64, "3 to 63"),
    ("a." + "b" * 221, "3 to 222"),
    ("a." + "b" * 64, "at most 63"),
    ("Bucket", "lowercase"),
    ("a+b", "lowercase"),
    ("_abc", "start and end"),
    ("abc-", "start and end"),
    ("goog-abc", "goog"),
    ("my-google-data", "google"),
    ("my-g00gle-data", "google"),
    ("10.0.0.1", "IP address"),
])
def test_names_breaking_the_rules_say_which_rule(name, why):
    assert why in GCSStore().check_name(name)


# -- credentials --------------------------------------------------------------------------------

def test_no_credentials_are_found_offline_with_a_hint(monkeypatch, tmp_path):
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    check = GCSStore().check_credentials()
    assert not check.ok
    assert "GOOGLE_APPLICATION_CREDENTIALS" in check.hint


def test_a_key_google_refuses_is_one_line_with_a_hint(gcs_env, monkeypatch, tmp_path):
    refused = gcs_env.write_key(tmp_path / "deleted-key.json", registered=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(refused))
    with pytest.raises(StoreError) as error:
        GCSStore().exists("skyk-any-bucket")
    assert error.value.code == "invalid_grant"
    assert "credentials" in str(error.value) and "\n" not in str(error.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in error.value.hint


def test_a_credentials_file_that_is_gone_is_one_line_with_a_hint(gcs_env, monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "gone.json"))
    with pytest.raises(StoreError) as error:
        GCSStore().exists("skyk-any-bucket")
    assert error.value.code == "credentials"
    assert str(error.value).startswith("no usable GCP credentials") and "\n" not in str(error.value)
    assert error.value.hint


def test_an_endpoint_that_does_not_answer_is_one_line(gcs_env, monkeypatch):
    import socket

    import skyk_gcp.store

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", closed)
    monkeypatch.setattr(skyk_gcp.store, "RETRY_TIMEOUT", 1.0)
    with pytest.raises(StoreError) as error:
        GCSStore().exists("skyk-any-bucket")
    assert error.value.code == "unreachable"
    assert str(error.value).startswith(f"GCS did not answer at {closed}")
    assert "STORAGE_EMULATOR_HOST" in error.value.hint


def test_the_emulator_leaves_no_process(emulator):  # the fixture: skipped without the package
    from fakecloud import FakeGCS

    with FakeGCS() as fake:
        process = fake._process
        assert process.poll() is None
    assert process.poll() is not None


def test_nodes_need_a_service_account_key(gcs_env, monkeypatch, tmp_path):
    user = tmp_path / "adc.json"
    user.write_text(json.dumps({"type": "authorized_user", "client_id": "i", "client_secret": "s",
                                "refresh_token": "r"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(user))
    with pytest.raises(StoreError) as error:
        GCSStore().node_access("skyk-any-bucket")
    assert "service-account key" in str(error.value) and error.value.hint


# -- errors and labels on the emulator ------------------------------------------------------------

def test_a_missing_bucket_is_a_store_error_with_gcs_code(gcs_env):
    store = GCSStore()
    missing = f"skyk-missing-{secrets.token_hex(4)}"
    assert not store.exists(missing)
    with pytest.raises(StoreError) as error:
        store.list_objects(BucketRef("gcs", missing, "d"))
    assert error.value.code in ("notFound", "404")
    assert f"gs://{missing} does not exist" in str(error.value)
    assert error.value.hint


@pytest.fixture
def bucket(gcs_env):
    """A bucket the store created, deleted after the test."""
    store = GCSStore()
    name = f"skyk-test-{secrets.token_hex(4)}"
    store.create(name, None)
    yield name
    store.delete(name)


def test_a_missing_object_is_a_store_error(bucket):
    with pytest.raises(StoreError) as error:
        GCSStore().read_object(BucketRef("gcs", bucket, "d"), "nothing.txt")
    assert error.value.code in ("notFound", "404")
    assert f"gs://{bucket}/d/nothing.txt" in str(error.value)


def test_a_name_taken_is_a_store_error_saying_so(bucket):
    with pytest.raises(StoreError) as error:
        GCSStore().create(bucket, None)
    assert error.value.code in ("conflict", "409")
    assert "is taken" in str(error.value) and "global" in error.value.hint


def test_created_buckets_are_labelled_as_skyks(gcs_env, bucket):
    found = gcs_env.client().get_bucket(bucket)
    assert found.labels == {"skyk-managed": "true"}
    assert found.iam_configuration.uniform_bucket_level_access_enabled


def test_a_bucket_with_more_objects_than_a_batch_is_deleted(gcs_env, tmp_path):
    store = GCSStore()
    name = f"skyk-many-{secrets.token_hex(4)}"
    store.create(name, None)
    for i in range(130):
        (tmp_path / f"f{i:03}.txt").write_text(str(i))
    store.upload(tmp_path, BucketRef("gcs", name, "many"))
    assert len(store.list_objects(BucketRef("gcs", name, "many"))) == 130
    store.delete(name)
    assert not store.exists(name)


def test_node_access_reaches_the_sdks_endpoint_with_the_key_in_a_file(gcs_env):
    access = GCSStore().node_access("skyk-any-bucket")
    assert access.remote["type"] == "google cloud storage"
    assert access.remote["service_account_file"] == "{files}/key.json"
    assert access.remote["endpoint"] == f"{gcs_env.endpoint}/storage/v1/"
    assert access.remote["project_number"] == gcs_env.project
    assert access.files == {"key.json": gcs_env.key_file.read_bytes()}
    assert not access.env
    assert "private_key" not in json.dumps(access.remote)
