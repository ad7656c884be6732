"""Fetch catalog files from a source (URL or directory) without losing user edits.

Each file is written atomically (temp file + rename). A manifest records the
SHA-256 of what skyk wrote; a file whose content no longer matches it, or that
skyk never wrote, belongs to the user and is left alone unless forced.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skyk.errors import CatalogError

#: SkyPilot's public catalog, v8 layout: <source>/<cloud>/vms.csv
DEFAULT_SOURCE = "https://raw.githubusercontent.com/skypilot-org/skypilot-catalog/master/catalogs/v8"
SOURCE_ENV = "SKYK_CATALOG_SOURCE"
MANIFEST = ".skyk-manifest.json"
_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class RefreshResult:
    """What happened to one catalog file."""

    path: str
    outcome: str  # updated | unchanged | kept-user-edit | failed
    detail: str = ""


def default_source() -> str:
    """Return ``SKYK_CATALOG_SOURCE`` or SkyPilot's public v8 catalog."""
    return os.environ.get(SOURCE_ENV) or DEFAULT_SOURCE


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(source: str, relative: str) -> bytes:
    """Return the bytes of ``relative`` under ``source`` (an http(s) URL or a directory)."""
    if source.startswith(("http://", "https://")):
        import requests

        url = f"{source.rstrip('/')}/{relative}"
        try:
            response = requests.get(url, timeout=_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            raise CatalogError(f"cannot fetch {url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise CatalogError(f"cannot fetch {url}: HTTP {response.status_code}")
        return response.content
    path = Path(source).expanduser() / relative
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}") from None


def _check_csv(relative: str, data: bytes) -> None:
    if relative.endswith(".csv"):
        header = data.split(b"\n", 1)[0]
        if b"," not in header or not header.strip():
            raise CatalogError(f"{relative} from the source is not a CSV catalog")


def refresh(files: list[str], directory: Path, source: str, force: bool = False) -> list[RefreshResult]:
    """Fetch every file in ``files`` from ``source`` into ``directory``.

    :param force: overwrite files the user edited (or that skyk did not write).
    :return: one result per file; failures do not stop the other files.
    """
    manifest_path = directory / MANIFEST
    try:
        manifest: dict[str, str] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    results = []
    for relative in files:
        target = directory / relative
        current = target.read_bytes() if target.is_file() else None
        if current is not None and not force and manifest.get(relative) != _digest(current):
            results.append(RefreshResult(relative, "kept-user-edit",
                                         "changed since skyk wrote it (or not written by skyk)"))
            continue
        try:
            data = fetch(source, relative)
            _check_csv(relative, data)
        except CatalogError as exc:
            results.append(RefreshResult(relative, "failed", exc.message))
            continue
        if current == data:
            results.append(RefreshResult(relative, "unchanged"))
        else:
            atomic_write(target, data)
            results.append(RefreshResult(relative, "updated", f"{len(data)} bytes"))
        manifest[relative] = _digest(data)
        atomic_write(manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return results
