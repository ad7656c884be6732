"""Fetch catalog files from a source (URL or directory) without losing user edits.

Each file is written atomically (temp file + rename). A manifest records the
SHA-256 of what skyk wrote; a file whose content no longer matches it, or that
skyk never wrote, belongs to the user and is left alone unless forced.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skyk.catalog.csvfile import VM_COLUMNS
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
    """Write ``data`` to ``path`` so readers see the old or the new file, never a part.

    The file keeps the mode of the one it replaces; a new file gets the
    umask's default mode, as if written with ``open``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes it 0600
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


def check_catalog(relative: str, data: bytes) -> None:
    """Raise ``CatalogError`` unless ``data`` is a usable catalog CSV.

    It must be UTF-8 CSV with a header of at least two columns (for a
    ``vms.csv``, the columns every SkyPilot-format catalog has) and at least
    one row, each row as wide as the header, so a broken download never
    replaces a good catalog.
    """
    if not relative.endswith(".csv"):
        return
    bad = f"{relative} from the source is not a usable CSV catalog"
    header, rows = _read_csv(data)
    if header is None or len(header) < 2:
        raise CatalogError(f"{bad}: no header row", hint="check --source")
    expected = VM_COLUMNS if relative.rsplit("/", 1)[-1] == "vms.csv" else ()
    missing = [c for c in expected if c not in header]
    if missing:
        raise CatalogError(f"{bad}: it lacks column(s) {', '.join(missing)}", hint="check --source")
    if not rows:
        raise CatalogError(f"{bad}: it has no rows", hint="check --source")
    if any(len(row) < len(header) for row in rows):
        raise CatalogError(f"{bad}: a row has fewer fields than the header",
                           hint="the download looks truncated; check --source")


def _read_csv(data: bytes) -> tuple[list[str] | None, list[list[str]]]:
    """Return the header and the non-empty rows of CSV ``data`` (header None if unreadable)."""
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(reader, None)
        return header, [row for row in reader if row]
    except (UnicodeDecodeError, csv.Error):
        return None, []


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
            check_catalog(relative, data)
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
