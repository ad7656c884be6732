"""Azure Blob's naming rules and URL form: ``https://ACCOUNT.blob.core.windows.net/CONTAINER[/dir]``.

Pure functions (no SDK, no network): the CLI checks a task's buckets before
anything is provisioned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

#: the storage suffixes of Azure's clouds: public, China, US Government
SUFFIXES = ("core.windows.net", "core.chinacloudapi.cn", "core.usgovcloudapi.net")
_HOST = re.compile(r"^([^.]+)\.blob\.(" + "|".join(re.escape(s) for s in SUFFIXES) + r")$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
#: a letter or digit, then letters, digits and single hyphens each followed by a letter or digit
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")


@dataclass(frozen=True)
class BlobURL:
    """What a Blob URL names: the account, the container and a prefix (no outer slashes)."""

    account: str
    container: str
    prefix: str
    suffix: str = SUFFIXES[0]


class BlobURLError(ValueError):
    """A URL of Azure Blob's form that does not name a container properly."""


def parse(url: str) -> BlobURL | None:
    """Return what ``url`` names, ``None`` if it is not an Azure Blob URL.

    Raises :class:`BlobURLError` for a Blob URL that names no container, an
    invalid account, or carries a query (a SAS token: credentials belong in
    the environment, not in a task file).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    match = _HOST.match(host or "")
    if parts.scheme.lower() != "https" or match is None:
        return None
    account, suffix = match.groups()
    where = f"https://{host}"
    if parts.query or parts.fragment:
        # Never echo the query: it may be a SAS token.
        raise BlobURLError(f"{where}/...: a Blob URL in a task takes no query or fragment"
                           " (a SAS token); give the storage account's credentials instead")
    reason = account_problem(account)
    if reason:
        raise BlobURLError(f"{where}: {reason}")
    container, _, prefix = unquote(parts.path).lstrip("/").partition("/")
    if not container:
        raise BlobURLError(f"{where}: the URL names no container (https://{host}/CONTAINER[/dir])")
    return BlobURL(account, container, prefix.strip("/"), suffix)


def url(account: str, container: str, prefix: str = "", suffix: str = SUFFIXES[0]) -> str:
    """Return the URL a user writes for ``container[/prefix]`` of ``account``."""
    path = f"{container}/{prefix}" if prefix else container
    return f"https://{account}.blob.{suffix}/{path}"


def account_problem(name: str) -> str | None:
    """Why ``name`` is not a valid storage account name, or ``None``."""
    if not _ACCOUNT.match(name):
        return (f"{name!r} is not a storage account name: 3 to 24 lowercase letters"
                " and digits")
    return None


def container_problem(name: str) -> str | None:
    """Why ``name`` breaks Azure's container naming rules, or ``None`` if it keeps them."""
    if not 3 <= len(name) <= 63:
        return f"container name {name!r} must be 3 to 63 characters long"
    if not _CONTAINER.match(name):
        if re.search(r"[^a-z0-9-]", name):
            return (f"container name {name!r} may hold only lowercase letters, digits and"
                    " hyphens")
        if "--" in name:
            return f"container name {name!r} must not hold consecutive hyphens"
        return f"container name {name!r} must start and end with a letter or digit"
    return None
