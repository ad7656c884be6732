"""Which storage account skyk's Azure store uses, where its Blob endpoint is, and its key.

Blob storage lives in a storage account that must already exist (skyk creates
containers in it, never accounts). The account is named, with its key, the
way Azure's own tools take it from the environment:

- ``AZURE_STORAGE_CONNECTION_STRING``: ``AccountName``, ``AccountKey`` and the
  endpoint: ``BlobEndpoint`` if given (another cloud, Azure Stack, an
  emulator), else ``DefaultEndpointsProtocol://ACCOUNT.blob.EndpointSuffix``
  (``https`` and ``core.windows.net`` by default); ``UseDevelopmentStorage=true``
  names the local storage emulator's development account;
- otherwise ``AZURE_STORAGE_ACCOUNT`` and ``AZURE_STORAGE_KEY``, at
  ``https://ACCOUNT.blob.core.windows.net``.

Reading them needs no SDK and no network, so ``skyk check`` stays light.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from dataclasses import dataclass, field

from skyk.provision.cloud import CredentialCheck

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_ENV = "AZURE_STORAGE_ACCOUNT"
KEY_ENV = "AZURE_STORAGE_KEY"
#: Azure's public cloud's storage suffix; ``EndpointSuffix`` names another cloud's
DEFAULT_SUFFIX = "core.windows.net"
#: the local storage emulator's development account, as ``UseDevelopmentStorage=true`` names it
DEVELOPMENT_ACCOUNT = "devstoreaccount1"
DEVELOPMENT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
                   "KBHBeksoGMGw==")
DEVELOPMENT_ENDPOINT = f"http://127.0.0.1:10000/{DEVELOPMENT_ACCOUNT}"
_HINT = (f"set {CONNECTION_STRING_ENV} (az storage account show-connection-string -n ACCOUNT),"
         f" or {ACCOUNT_ENV} and {KEY_ENV}")


@dataclass(frozen=True)
class BlobAccount:
    """A storage account: its name, its Blob service URL (no trailing slash) and its key."""

    name: str
    endpoint: str
    key: str = field(repr=False)
    #: the variable(s) it came from, for messages
    source: str = ""


class AccountError(ValueError):
    """The environment names no usable storage account; ``hint`` says what to set."""

    def __init__(self, message: str, hint: str = _HINT) -> None:
        super().__init__(message)
        self.hint = hint


def from_environment() -> BlobAccount:
    """Return the storage account the environment names, or raise :class:`AccountError`."""
    connection = os.environ.get(CONNECTION_STRING_ENV, "").strip()
    if connection:
        return _from_connection_string(connection)
    name = os.environ.get(ACCOUNT_ENV, "").strip()
    key = os.environ.get(KEY_ENV, "").strip()
    if not name:
        raise AccountError("no Azure storage account named")
    if not key:
        raise AccountError(f"no key for the storage account {name} ({KEY_ENV} is not set)",
                           hint=_key_hint(name))
    return _checked(BlobAccount(name, f"https://{name}.blob.{DEFAULT_SUFFIX}", key,
                                f"{ACCOUNT_ENV}/{KEY_ENV}"))


def check() -> CredentialCheck:
    """Whether a storage account and its key are set and well formed. No network."""
    try:
        account = from_environment()
    except AccountError as exc:
        return CredentialCheck(False, str(exc), hint=exc.hint)
    return CredentialCheck(True, f"storage account {account.name} ({account.source}),"
                           f" {account.endpoint}")


def _from_connection_string(text: str) -> BlobAccount:
    parts: dict[str, str] = {}
    for item in text.split(";"):
        if item.strip():
            key, sep, value = item.partition("=")
            if not sep:
                raise AccountError(f"{CONNECTION_STRING_ENV} is not a list of NAME=VALUE items")
            parts[key.strip().lower()] = value.strip()
    source = CONNECTION_STRING_ENV
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return BlobAccount(DEVELOPMENT_ACCOUNT, DEVELOPMENT_ENDPOINT, DEVELOPMENT_KEY, source)
    name, key = parts.get("accountname", ""), parts.get("accountkey", "")
    if not name:
        raise AccountError(f"{CONNECTION_STRING_ENV} names no AccountName")
    if not key:
        # A SAS alone cannot sign the container-scoped SAS a node gets.
        raise AccountError(f"{CONNECTION_STRING_ENV} has no AccountKey", hint=_key_hint(name))
    endpoint = parts.get("blobendpoint") or (
        f"{parts.get('defaultendpointsprotocol') or 'https'}://{name}.blob."
        f"{parts.get('endpointsuffix') or DEFAULT_SUFFIX}")
    return _checked(BlobAccount(name, endpoint.rstrip("/"), key, source))


def _checked(account: BlobAccount) -> BlobAccount:
    try:
        base64.b64decode(account.key, validate=True)
    except (binascii.Error, ValueError):
        raise AccountError(f"the key of the storage account {account.name} is not base64"
                           f" ({account.source})", hint=_key_hint(account.name)) from None
    if not account.endpoint.startswith(("https://", "http://")):
        raise AccountError(f"the Blob endpoint {account.endpoint!r} is not an http(s) URL")
    return account


def _key_hint(name: str) -> str:
    return (f"set {KEY_ENV} to a key of the account (az storage account keys list -n {name}"
            " --query [0].value -o tsv)")


@functools.lru_cache(maxsize=4)
def service_client(account: BlobAccount):
    """Return azure-storage-blob's client for ``account`` (imports the SDK).

    Made once per account and then shared, threads included (the SDK's clients
    are thread-safe), so the verbs of one command reuse its connections.
    """
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    # The SDK's own retries (it knows which storage errors are worth one), but
    # waiting about 2.5, 4.5 and 8.5 s instead of its default 18, 24 and 42 s, one
    # retry only of a connection that failed, and short connection timeouts: a
    # wrong endpoint fails in seconds, not minutes.
    retry = ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=3,
                             retry_connect=1, random_jitter_range=0.5)
    return BlobServiceClient(account.endpoint,
                             credential={"account_name": account.name, "account_key": account.key},
                             retry_policy=retry, connection_timeout=10, read_timeout=120,
                             user_agent="skyk")
