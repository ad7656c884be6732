"""The S3 store: the store contract against the fake S3 (moto), and S3's own rules and errors.

The store is pointed at the fake only as a user points the AWS SDKs at another
endpoint (``AWS_ENDPOINT_URL_S3`` and ``AWS_*`` credentials, :meth:`FakeS3.env`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest
from fakecloud import FakeS3
from fakecloud.tools import missing_tool
from skyk.agent import rclone
from skyk.storage.store import BucketRef, StoreError
from skyk.testing import StoreContract
from skyk_aws.store import S3Store


@pytest.fixture(scope="module")
def fake_s3():
    """One fake S3 for the module; each test makes buckets of its own names."""
    with FakeS3() as s3:
        yield s3


@pytest.fixture
def s3_env(monkeypatch, fake_s3):
    for key, value in fake_s3.env().items():
        monkeypatch.setenv(key, value)
    return fake_s3


def _name() -> str:
    return f"skyk-test-{secrets.token_hex(4)}"


class TestS3StoreContract(StoreContract):
    store_name = "s3"
    sample_url = "s3://my-bucket/some/dir"
    sample_ref = BucketRef("s3", "my-bucket", "some/dir")
    bad_names = ["UPPER", "ab", "with_underscore", "-leading", "trailing-", "a..b", "192.168.5.4",
                 "xn--punycode", "sthree-bucket", "alias-s3alias", "lambda--ol-s3", "x" * 64]

    @pytest.fixture
    def store_env(self, s3_env):
        yield s3_env


# -- URLs and names (no network) --------------------------------------------------------------

@pytest.mark.parametrize(("url", "ref"), [
    ("s3://bucket", BucketRef("s3", "bucket", "")),
    ("s3://bucket/", BucketRef("s3", "bucket", "")),
    ("s3://bucket/dir/", BucketRef("s3", "bucket", "dir")),
    ("s3://bucket//dir/sub//", BucketRef("s3", "bucket", "dir/sub")),
    ("s3://bucket.with.dots/a b/c+d", BucketRef("s3", "bucket.with.dots", "a b/c+d")),
    ("s3://", BucketRef("s3", "", "")),
])
def test_s3_urls_name_a_bucket_and_a_prefix(url, ref):
    assert S3Store().parse_url(url) == ref


@pytest.mark.parametrize("url", ["S3://bucket/dir", "s3:/bucket", "s3a://bucket/dir", "gs://bucket",
                                 "https://bucket.s3.amazonaws.com/dir", "bucket/dir", ""])
def test_other_urls_are_not_s3s(url):
    assert S3Store().parse_url(url) is None


def test_a_url_without_a_bucket_breaks_the_naming_rules():
    store = S3Store()
    assert "3 to 63" in store.check_name(store.parse_url("s3://").bucket)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "1bucket", "xn-bucket", "bucket-s3",
                                  "192.168.5", "s3alias"])
def test_names_s3_accepts(name):
    assert S3Store().check_name(name) is None


@pytest.mark.parametrize(("name", "why"), [
    ("ab", "3 to 63"), ("a" * 64, "3 to 63"), ("My-Bucket", "lowercase"), ("under_score", "lowercase"),
    (".dot", "begin and end"), ("dash-", "begin and end"), ("a..b", "adjacent dots"),
    ("10.0.0.1", "IP address"), ("xn--abc", "'xn--'"), ("sthree-x", "'sthree-'"),
    ("amzn-s3-demo-bucket", "'amzn-s3-demo-'"), ("x-s3alias", "'-s3alias'"), ("x--ol-s3", "'--ol-s3'"),
    ("x.mrap", "'.mrap'"), ("x--x-s3", "'--x-s3'"),
])
def test_names_s3_refuses_say_which_rule(name, why):
    assert why in S3Store().check_name(name)


# -- credentials ------------------------------------------------------------------------------

def test_no_credentials_is_reported_with_a_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    check = S3Store().check_credentials()
    assert not check.ok
    assert "AWS_ACCESS_KEY_ID" in check.hint


def test_node_access_without_credentials_is_a_store_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError) as caught:
        S3Store().node_access("bucket")
    assert caught.value.code == "NoCredentials" and caught.value.hint


# -- the bed's S3 -----------------------------------------------------------------------------

def test_a_created_bucket_is_tagged_as_skyks(s3_env):
    name = _name()
    store = S3Store()
    store.create(name, None)
    try:
        tags = s3_env.client().get_bucket_tagging(Bucket=name)["TagSet"]
        assert {"Key": "skyk-managed", "Value": "true"} in tags
    finally:
        store.delete(name)


def test_a_bucket_is_created_in_the_region_asked_for(s3_env):
    name = _name()
    store = S3Store()
    store.create(name, "eu-west-3")
    try:
        assert s3_env.client().get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-3"
        assert store.node_access(name).remote["region"] == "eu-west-3"
    finally:
        store.delete(name)


def test_a_missing_bucket_is_a_store_error_with_s3s_code(s3_env):
    store = S3Store()
    assert not store.exists(_name())
    with pytest.raises(StoreError) as caught:
        store.list_objects(BucketRef("s3", _name()))
    assert caught.value.code == "NoSuchBucket"
    assert "\n" not in str(caught.value) and caught.value.hint


def test_uploading_to_a_missing_bucket_is_a_store_error_with_s3s_code(s3_env, tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    with pytest.raises(StoreError) as caught:
        S3Store().upload(tmp_path / "a.txt", BucketRef("s3", _name(), "dir"))
    assert caught.value.code == "NoSuchBucket"


def test_a_missing_object_is_a_store_error_with_s3s_code(s3_env):
    name = _name()
    store = S3Store()
    store.create(name, None)
    try:
        with pytest.raises(StoreError) as caught:
            store.read_object(BucketRef("s3", name, "dir"), "absent.txt")
        assert caught.value.code == "NoSuchKey"
    finally:
        store.delete(name)


@pytest.mark.parametrize(("variable", "code"), [("AWS_ACCESS_KEY_ID", "InvalidAccessKeyId"),
                                                ("AWS_SECRET_ACCESS_KEY", "SignatureDoesNotMatch")])
def test_wrong_credentials_are_a_store_error_with_a_hint(s3_env, monkeypatch, variable, code):
    name = _name()
    s3_env.client().create_bucket(Bucket=name)
    monkeypatch.setenv(variable, "AKIAWRONGWRONGWRONG0" if variable == "AWS_ACCESS_KEY_ID" else "x" * 40)
    store = S3Store()
    with pytest.raises(StoreError) as caught:
        store.list_objects(BucketRef("s3", name))
    assert caught.value.code == code
    assert "aws sts get-caller-identity" in caught.value.hint
    # A HEAD request's answer has no body: only its status says the credentials were refused.
    with pytest.raises(StoreError) as caught:
        store.exists(name)
    assert caught.value.code == "AccessDenied" and caught.value.hint


def test_a_name_another_account_holds_is_a_store_error(s3_env):
    name = _name()
    with FakeS3() as other:
        other.client().create_bucket(Bucket=name)
        with pytest.raises(StoreError) as caught:
            S3Store().create(name, None)
    assert caught.value.code == "BucketAlreadyExists"
    assert "global" in caught.value.hint


def test_deleting_a_bucket_removes_every_version(s3_env):
    name = _name()
    client = s3_env.client()
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        client.put_object(Bucket=name, Key="k", Body=body)
    client.delete_object(Bucket=name, Key="k")
    S3Store().delete(name)
    assert not S3Store().exists(name)


def test_node_access_reaches_the_sdks_endpoint_and_copies_only_the_key(s3_env):
    access = S3Store().node_access("bucket")
    assert access.remote["provider"] == "Other"
    assert access.remote["endpoint"] == s3_env.endpoint
    assert access.remote["access_key_id"] == s3_env.access_key
    assert access.remote["secret_access_key"] == s3_env.secret_key
    assert "session_token" not in access.remote
    assert access.files == {} and access.env == {}
    assert s3_env.secret_key not in repr(access)
    assert "AWS_CA_BUNDLE" in access.unset_env and "AWS_ENDPOINT_URL_S3" in access.unset_env


def test_node_access_for_aws_itself_names_no_endpoint(monkeypatch, tmp_path):
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00", "AWS_SECRET_ACCESS_KEY": "s" * 40,
                       "AWS_SESSION_TOKEN": "token", "AWS_DEFAULT_REGION": "eu-central-1",
                       "AWS_CONFIG_FILE": str(tmp_path / "none"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(key, value)
    remote = S3Store().node_access("bucket").remote
    assert remote["provider"] == "AWS" and "endpoint" not in remote
    assert remote["region"] == "eu-central-1" and remote["session_token"] == "token"


def test_node_access_sends_rclone_to_the_region_s3_reports_for_the_bucket(s3_env):
    name = _name()
    s3_env.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
    store = S3Store()
    assert store.exists(name)
    try:
        assert store.node_access(name).remote["region"] == "ap-south-1"
    finally:
        store.delete(name)


def test_rclone_ignores_the_nodes_own_aws_variables(s3_env, tmp_path):
    program = shutil.which("rclone")
    if program is None:
        missing_tool("rclone is not installed (CI installs it with apt)")
    name = _name()
    s3_env.client().create_bucket(Bucket=name)
    s3_env.client().put_object(Bucket=name, Key="dir/a.txt", Body=b"alpha")
    access = {"s3": S3Store().node_access(name).as_json()}
    config = rclone.write_config(tmp_path / "rclone", access)
    # What a node may have set for its own use: none of it may reach rclone. Any AWS_CA_BUNDLE
    # makes rclone's S3 backend fail (LoadCustomCABundleError), even a readable one.
    (tmp_path / "bundle.pem").write_text("")
    node = {**os.environ, "AWS_CA_BUNDLE": str(tmp_path / "bundle.pem"),
            "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "x" * 40,
            "AWS_PROFILE": "absent", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1"}
    result = subprocess.run([program, "lsf", "-R", f"s3:{name}"], env=rclone.environment(config, access, node),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == ["dir/", "dir/a.txt"]
