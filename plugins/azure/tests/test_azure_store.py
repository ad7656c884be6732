"""The Azure Blob store against Azurite: the contract kit, URLs, names, errors and credentials.

The store is pointed at Azurite only as a user would point it at another
Blob endpoint: ``AZURE_STORAGE_CONNECTION_STRING`` (:meth:`fakecloud.Azurite.env`).
Azurite is installed by ``dev/install`` (npm); without it the tests that
need it are skipped, except in CI.
"""

from __future__ import annotations

import secrets
import socket
import subprocess

import pytest
from fakecloud.tools import missing_tool

pytest.importorskip("azure.storage.blob")

from fakecloud import Azurite  # noqa: E402
from fakecloud import azurite as azurite_module  # noqa: E402
from skyk.plugins.manager import Kernel  # noqa: E402
from skyk.storage.store import BucketRef, StoreError  # noqa: E402
from skyk.testing import StoreContract  # noqa: E402
from skyk_azure import errors  # noqa: E402

ACCOUNT = azurite_module.ACCOUNT
#: every variable that names a storage account to the store
STORAGE_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY",
               "SKYK_AZURE_SAS_DAYS")


def _clear(monkeypatch) -> None:
    for name in STORAGE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def azurite():
    if azurite_module.program() is None:
        missing_tool("azurite-blob is not installed (dev/install installs it with npm)")
    with Azurite() as server:
        yield server


@pytest.fixture
def at_azurite(monkeypatch, azurite):
    _clear(monkeypatch)
    for key, value in azurite.env().items():
        monkeypatch.setenv(key, value)
    return azurite


@pytest.fixture
def store():
    return Kernel.load(("cloud",), ["azure"]).stores()["azure"]


class TestAzureBlobStoreContract(StoreContract):
    store_name = "azure"
    sample_url = f"https://{ACCOUNT}.blob.core.windows.net/container/some/dir"
    sample_ref = BucketRef("azure", "container", "some/dir")
    bad_names = ["UPPER", "ab", "a" * 64, "with_underscore", "double--hyphen", "-leading",
                 "trailing-", "dot.ted"]

    @pytest.fixture
    def store_env(self, at_azurite):
        yield at_azurite


# ------------------------------------------------------------------- URLs (no network)


def test_urls_name_container_and_prefix(monkeypatch, store):
    _clear(monkeypatch)
    cases = {
        "https://acct1.blob.core.windows.net/data": BucketRef("azure", "data", ""),
        "https://acct1.blob.core.windows.net/data/": BucketRef("azure", "data", ""),
        "https://acct1.blob.core.windows.net/data/a/b/": BucketRef("azure", "data", "a/b"),
        "https://ACCT1.Blob.Core.Windows.Net/data/x": BucketRef("azure", "data", "x"),
        "https://acct1.blob.core.windows.net:443/data/x": BucketRef("azure", "data", "x"),
        "https://acct1.blob.core.windows.net/data/my%20dir": BucketRef("azure", "data", "my dir"),
        "https://acct1.blob.core.chinacloudapi.cn/data/x": BucketRef("azure", "data", "x"),
    }
    for url, ref in cases.items():
        assert store.parse_url(url) == ref, url


def test_urls_of_other_forms_are_not_azure_blob(monkeypatch, store):
    _clear(monkeypatch)
    for url in ("http://acct1.blob.core.windows.net/data", "https://acct1.file.core.windows.net/s",
                "https://example.com/data", "https://blob.core.windows.net/data",
                "https://acct1.blob.core.windows.net.evil.com/data", "s3://data/x", "gs://data",
                "/local/path", "relative/path", "https://[::1/x"):
        assert store.parse_url(url) is None, url


def test_blob_urls_without_a_container_or_with_a_sas_are_refused_in_one_line(monkeypatch, store):
    _clear(monkeypatch)
    with pytest.raises(StoreError) as raised:
        store.parse_url("https://acct1.blob.core.windows.net/data/x?sv=2024&sig=SECRET")
    assert "SECRET" not in str(raised.value) and raised.value.code == "InvalidUri"
    for url in ("https://acct1.blob.core.windows.net/", "https://acct1.blob.core.windows.net",
                "https://a.blob.core.windows.net/data", "https://acct_1.blob.core.windows.net/d"):
        with pytest.raises(StoreError) as raised:
            store.parse_url(url)
        assert "\n" not in str(raised.value), url


def test_a_url_of_another_storage_account_is_refused(monkeypatch, store):
    _clear(monkeypatch)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "mine")
    monkeypatch.setenv("AZURE_STORAGE_KEY", azurite_module.KEY)
    assert store.parse_url("https://mine.blob.core.windows.net/data") == BucketRef("azure", "data")
    with pytest.raises(StoreError) as raised:
        store.parse_url("https://theirs.blob.core.windows.net/data")
    assert raised.value.code == "AccountMismatch" and "theirs" in raised.value.hint


def test_url_uses_the_cloud_of_the_configured_endpoint(monkeypatch, store):
    _clear(monkeypatch)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"AccountName=acct1;AccountKey={azurite_module.KEY};"
                       "EndpointSuffix=core.chinacloudapi.cn")
    ref = BucketRef("azure", "data", "x/y")
    assert store.url(ref) == "https://acct1.blob.core.chinacloudapi.cn/data/x/y"
    assert store.parse_url(store.url(ref)) == ref


# ------------------------------------------------------------------- names


def test_container_naming_rules(store):
    for good in ("abc", "a" * 63, "my-container-1", "0data", "a-b-c"):
        assert store.check_name(good) is None, good
    reasons = {name: store.check_name(name) for name in
               ("ab", "a" * 64, "Data", "a_b", "a--b", "-ab", "ab-", "a.b", "")}
    assert "3 to 63" in reasons["ab"] and "3 to 63" in reasons["a" * 64]
    assert "lowercase" in reasons["Data"] and "lowercase" in reasons["a_b"]
    assert "consecutive" in reasons["a--b"]
    assert "start and end" in reasons["-ab"] and "start and end" in reasons["ab-"]
    assert all(reasons.values())


def test_a_bad_name_is_refused_before_any_request(monkeypatch, store):
    _clear(monkeypatch)  # no account at all: the name is checked first
    with pytest.raises(StoreError) as raised:
        store.create("Bad_Name", None)
    assert raised.value.code == "InvalidResourceName"


# ------------------------------------------------------------------- credentials


def test_no_credentials_are_reported_with_a_hint(monkeypatch, store):
    _clear(monkeypatch)
    check = store.check_credentials()
    assert not check.ok and "AZURE_STORAGE_CONNECTION_STRING" in check.hint
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct1")
    check = store.check_credentials()
    assert not check.ok and "AZURE_STORAGE_KEY" in check.reason and "acct1" in check.hint
    with pytest.raises(StoreError) as raised:
        store.exists("data")
    assert raised.value.code == "NoCredentials" and raised.value.hint


def test_malformed_credentials_are_not_ok(monkeypatch, store):
    _clear(monkeypatch)
    for text in ("AccountName=acct1", "AccountName=acct1;AccountKey=not*base64",
                 "AccountKey=" + azurite_module.KEY, "garbage"):
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", text)
        check = store.check_credentials()
        assert not check.ok and check.hint, text
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true")
    assert store.check_credentials().ok


def test_credentials_never_show_the_key(monkeypatch, store):
    _clear(monkeypatch)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "acct1")
    monkeypatch.setenv("AZURE_STORAGE_KEY", azurite_module.KEY)
    check = store.check_credentials()
    assert check.ok and azurite_module.KEY not in check.reason


# ------------------------------------------------------------------- against Azurite


def _container_client(azurite: Azurite, name: str):
    from azure.storage.blob import ContainerClient

    return ContainerClient.from_connection_string(azurite.connection_string(), name)


@pytest.fixture
def container(at_azurite, store):
    name = f"skyk-test-{secrets.token_hex(4)}"
    store.create(name, None)
    yield name
    store.delete(name)


def test_a_created_container_carries_skyks_metadata(at_azurite, store, container):
    metadata = _container_client(at_azurite, container).get_container_properties().metadata
    assert metadata == {"skyk_managed": "true"}


def test_missing_container_and_object_raise_the_stores_code(at_azurite, store, container):
    missing = f"skyk-missing-{secrets.token_hex(4)}"
    assert not store.exists(missing)
    with pytest.raises(StoreError) as raised:
        store.list_objects(BucketRef("azure", missing))
    assert raised.value.code == "ContainerNotFound" and raised.value.hint
    assert missing in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(StoreError) as raised:
        store.read_object(BucketRef("azure", container, "dir"), "nothing.bin")
    assert raised.value.code == "BlobNotFound"


def test_creating_a_container_twice_says_it_exists(at_azurite, store, container):
    with pytest.raises(StoreError) as raised:
        store.create(container, None)
    assert raised.value.code == "ContainerAlreadyExists" and raised.value.hint


def test_a_wrong_key_is_refused_with_a_hint(monkeypatch, at_azurite, store):
    wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       at_azurite.connection_string().replace(azurite_module.KEY, wrong))
    with pytest.raises(StoreError) as raised:
        store.exists("anything")
    assert raised.value.code in errors.STORAGE_DENIED
    assert "key" in raised.value.hint and wrong not in str(raised.value)


def test_an_endpoint_that_does_not_answer_is_one_line(monkeypatch, store):
    _clear(monkeypatch)
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"AccountName={ACCOUNT};AccountKey={azurite_module.KEY};"
                       f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT}")
    with pytest.raises(StoreError) as raised:
        store.exists("anything")
    assert raised.value.code == "ServiceRequestError" and "BlobEndpoint" in raised.value.hint


def test_node_access_is_a_blob_sas_without_the_key(at_azurite, store, container):
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobServiceClient

    other = f"skyk-other-{secrets.token_hex(4)}"
    store.create(other, None)
    try:
        access = store.node_access(container)
        remote = access.remote
        assert remote["type"] == "azureblob" and not access.env and not access.files
        assert azurite_module.KEY not in str(access) and "key" not in remote
        sas_url = remote["sas_url"]
        assert sas_url.startswith(f"{at_azurite.endpoint}?")
        # One remote serves every container of a task ...
        service = BlobServiceClient(sas_url)
        for name in (container, other):
            service.get_container_client(name).upload_blob("n.txt", name.encode())
            assert store.read_object(BucketRef("azure", name), "n.txt") == name.encode()
        # ... but cannot list the account's containers or read its settings.
        with pytest.raises(HttpResponseError):
            list(service.list_containers())
        with pytest.raises(HttpResponseError):
            service.get_service_properties()
    finally:
        store.delete(other)


def test_sas_lifetime_follows_the_variable(monkeypatch, at_azurite, store):
    from datetime import datetime, timedelta, timezone
    from urllib.parse import parse_qs, urlsplit

    monkeypatch.setenv("SKYK_AZURE_SAS_DAYS", "2")
    query = parse_qs(urlsplit(store.node_access("somecontainer").remote["sas_url"]).query)
    start, expiry = (datetime.fromisoformat(query[k][0].replace("Z", "+00:00")) for k in ("st", "se"))
    now = datetime.now(timezone.utc)
    assert start < now and timedelta(days=1.9) < expiry - now < timedelta(days=2.1)
    monkeypatch.setenv("SKYK_AZURE_SAS_DAYS", "-1")
    with pytest.raises(StoreError):
        store.node_access("somecontainer")


def test_azurite_on_another_address_is_reached_and_leaves_no_process(monkeypatch, store):
    # Node twins reach Azurite on a bridge address; any loopback address stands for one here.
    if azurite_module.program() is None:
        pytest.skip("azurite-blob is not installed")
    _clear(monkeypatch)
    with Azurite(host="127.0.0.2") as server:
        assert server.endpoint.startswith("http://127.0.0.2:")
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        assert not store.exists("nothing-here")
        pid = server._process.pid
    gone = subprocess.run(["ps", "-o", "pid=", "-g", str(pid)], capture_output=True, text=True)
    assert gone.stdout.strip() == ""
