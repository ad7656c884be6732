"""The cache of parsed catalogs, so a command reads a cloud's catalog as fast as it imports a module.

Parsing the three clouds' CSV catalogs builds ~90,000 offerings and takes
most of a dry run. What a plugin parsed is kept in
``$XDG_CACHE_HOME/skyk/catalogs/`` (default ``~/.cache/skyk/catalogs``), one
file per cloud, grouped by accelerator so a command decodes only the groups
it ranks. It is never stale: its key holds the size and modification time
of every catalog file the plugin reads and of the plugin's own source files,
and the Python version (marshal's format is Python's own). A file is written
whole under a temporary name and renamed into place, so concurrent commands
read an old file or a new one, never half of one; a file that is damaged or
has another key is ignored and written again. Deleting the directory is
always safe.
"""

from __future__ import annotations

import hashlib
import marshal
import mmap
import os
import sys
import tempfile
import zlib
from pathlib import Path

from skyk.catalog.offering import Offering
from skyk.catalog.store import CloudOfferings

#: bumped when the file's layout changes
FORMAT = 1
#: skyk's own code that shapes what a plugin's offerings look like
_CORE_CODE = tuple(sorted(Path(__file__).parent.glob("*.py")))


def cache_dir() -> Path:
    """Return where parsed catalogs are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "skyk" / "catalogs"


def read_cached(source, catalog_dir: Path) -> CloudOfferings:
    """Return ``source``'s offerings from ``catalog_dir``, parsed now or earlier.

    ``source`` is a :class:`skyk.plugins.manager.CatalogSource`. Raises
    ``CatalogError`` as the plugin does when its catalog is missing or malformed.
    """
    files = source.files()
    try:
        key = _key(source.cloud, catalog_dir, files, source.code_files())
    except OSError:
        # A catalog file is missing or unreadable: the plugin says which, in its own words.
        return CloudOfferings.of(source.read(catalog_dir))
    if not files:
        # Nothing on disk to parse (the local cloud describes this machine): nothing to cache.
        return CloudOfferings.of(source.read(catalog_dir))
    # One file per cloud and catalog directory; its name changes with the key.
    family = f"{source.cloud}-{_digest(str(catalog_dir.resolve()))[:12]}"
    path = cache_dir() / f"{family}-{_digest(key)[:24]}.bin"
    cached = _load(path, key, source, catalog_dir)
    if cached is not None:
        return cached
    offerings = CloudOfferings.of(source.read(catalog_dir))
    _store(path, key, offerings, family)
    return offerings


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _key(cloud: str, catalog_dir: Path, files: list[str], code: list[Path]) -> str:
    stamps = [f"{path}:{st.st_size}:{st.st_mtime_ns}"
              for path, st in ((p, os.stat(p)) for p in
                               [*(catalog_dir / f for f in files), *code, *_CORE_CODE])]
    return "\n".join([f"format {FORMAT}", f"python {sys.version_info[:3]} marshal {marshal.version}",
                      f"cloud {cloud}", f"dir {catalog_dir.resolve()}", *stamps])


def _load(path: Path, key: str, source, catalog_dir: Path) -> CloudOfferings | None:
    try:
        with open(path, "rb") as handle:
            # Mapped, not read: a request decodes only its groups, a few KB of megabytes.
            # The mapping keeps this file's contents even if another command replaces it.
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        size = int.from_bytes(data[:4], "big")
        header = marshal.loads(data[4:4 + size])
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(header, dict) or header.get("key") != key or not isinstance(header.get("groups"), dict):
        return None
    start = 4 + size

    def group(name: str | None, offset: int, length: int, crc: int):
        def build() -> list[Offering]:
            chunk = data[start + offset:start + offset + length]
            if len(chunk) == length and zlib.crc32(chunk) == crc:
                try:
                    return list(map(Offering._make, marshal.loads(chunk)))
                except (EOFError, ValueError, TypeError):
                    pass
            # A damaged file: parse the catalog again, and mend the cache.
            parsed = CloudOfferings.of(source.read(catalog_dir))
            _store(path, key, parsed, path.name.rsplit("-", 1)[0])
            return parsed.with_accelerator(name)
        return build

    try:
        return CloudOfferings(pending={name: group(name, *place)
                                       for name, place in header["groups"].items()})
    except TypeError:
        return None


def _store(path: Path, key: str, offerings: CloudOfferings, family: str) -> None:
    index, chunks, offset = {}, [], 0
    for name, group in offerings.groups().items():
        chunk = marshal.dumps([tuple(o) for o in group])
        index[name] = (offset, len(chunk), zlib.crc32(chunk))
        chunks.append(chunk)
        offset += len(chunk)
    header = marshal.dumps({"key": key, "groups": index})
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(len(header).to_bytes(4, "big"))
            handle.write(header)
            for chunk in chunks:
                handle.write(chunk)
        os.replace(tmp, path)
    except OSError:
        # A cache that cannot be written (read-only home, full disk) only costs speed.
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return
    # This cloud's files for the same directory with older keys will never match again.
    for old in path.parent.glob(f"{family}-*.bin"):
        if old != path:
            old.unlink(missing_ok=True)
