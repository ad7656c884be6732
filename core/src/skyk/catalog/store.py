"""Where catalogs live, and the offerings of every enabled cloud in one place."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

from skyk.catalog.accelerators import AcceleratorNames
from skyk.catalog.offering import Offering

CATALOG_DIR_ENV = "SKYK_CATALOG_DIR"


def skyk_home() -> Path:
    """Return skyk's state directory (``SKYK_HOME``, default ``~/.skyk``)."""
    return Path(os.environ.get("SKYK_HOME") or Path.home() / ".skyk").expanduser()


def private_home() -> Path:
    """Return ``SKYK_HOME``, creating it readable by this user alone (0700) if it is missing.

    It holds the state database, and with it service secrets.
    """
    from skyk.errors import SkykError

    home = skyk_home()
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SkykError(f"SKYK_HOME {home} is not a directory",
                        hint="point SKYK_HOME at a directory, or move that file aside") from None
    except OSError as exc:
        raise SkykError(f"cannot create SKYK_HOME {home}: {exc.strerror}",
                        hint="point SKYK_HOME at a directory you can write") from None
    return home


def catalog_dir() -> Path:
    """Return the catalog directory (``SKYK_CATALOG_DIR``, default ``~/.skyk/catalogs``)."""
    configured = os.environ.get(CATALOG_DIR_ENV)
    return Path(configured).expanduser() if configured else skyk_home() / "catalogs"


class CloudOfferings:
    """One cloud's offerings, grouped by accelerator name (``None`` for CPU-only).

    A group may be pending: a function that returns it, called on first use
    (the catalog cache decodes groups so), so a request for A100s never
    builds the tens of thousands of CPU-only offerings a cloud sells.
    """

    def __init__(self, groups: Mapping[str | None, list[Offering]] | None = None,
                 pending: Mapping[str | None, Callable[[], list[Offering]]] | None = None) -> None:
        self._groups = dict(groups or {})
        self._pending = dict(pending or {})

    @classmethod
    def of(cls, offerings: Iterable[Offering]) -> CloudOfferings:
        """Group ``offerings`` by accelerator."""
        groups: dict[str | None, list[Offering]] = defaultdict(list)
        for offering in offerings:
            groups[offering.accelerator].append(offering)
        return cls(groups)

    def accelerators(self) -> set[str | None]:
        """Every accelerator name offered, and ``None`` if CPU-only machines are; builds nothing."""
        return set(self._groups) | set(self._pending)

    def with_accelerator(self, name: str | None) -> list[Offering]:
        """The offerings carrying accelerator ``name``, or CPU-only ones for ``None``."""
        if name in self._pending:
            self._groups[name] = self._pending.pop(name)()
        return self._groups.get(name, [])

    def groups(self) -> dict[str | None, list[Offering]]:
        """Every group, built."""
        return {name: self.with_accelerator(name) for name in self.accelerators()}

    def all(self) -> list[Offering]:
        """Every offering."""
        return [o for name in sorted(self.accelerators(), key=lambda n: n or "")
                for o in self.with_accelerator(name)]


class Catalog:
    """The offerings of the loaded clouds, and why any cloud has none."""

    def __init__(self, offerings: Mapping[str, Iterable[Offering] | CloudOfferings],
                 errors: Mapping[str, str] | None = None) -> None:
        self._clouds = {cloud: found if isinstance(found, CloudOfferings) else CloudOfferings.of(found)
                        for cloud, found in offerings.items()}
        self.errors = dict(errors or {})

    @classmethod
    def load(cls, kernel, directory: Path | None = None) -> Catalog:
        """Read every loaded cloud plugin's catalog, through the cache of parsed catalogs."""
        from skyk.catalog.cache import read_cached
        from skyk.errors import CatalogError

        directory = directory or catalog_dir()
        clouds: dict[str, CloudOfferings] = {}
        errors: dict[str, str] = {}
        for source in kernel.catalog_sources():
            try:
                clouds[source.cloud] = read_cached(source, directory)
            except CatalogError as exc:
                errors[source.cloud] = exc.one_line()
        return cls(clouds, errors)

    @property
    def clouds(self) -> list[str]:
        """Every loaded cloud, with or without offerings, sorted."""
        return sorted(set(self._clouds) | set(self.errors))

    @property
    def offered_clouds(self) -> list[str]:
        """The clouds whose catalogs were read, sorted."""
        return sorted(self._clouds)

    def without(self, clouds: Collection[str]) -> Catalog:
        """This catalog less ``clouds``."""
        return Catalog({c: o for c, o in self._clouds.items() if c not in clouds},
                       {c: e for c, e in self.errors.items() if c not in clouds})

    def of_cloud(self, cloud: str) -> list[Offering]:
        """Every offering of ``cloud`` (none for a cloud not loaded)."""
        found = self._clouds.get(cloud)
        return found.all() if found else []

    def all(self) -> list[Offering]:
        """Every offering of every cloud."""
        return [o for cloud in self._clouds.values() for o in cloud.all()]

    def with_accelerator(self, name: str | None, cloud: str | None = None) -> list[Offering]:
        """Offerings carrying accelerator ``name`` (canonical), or CPU-only ones for None.

        ``cloud`` limits them to one cloud's, so the others' are never decoded.
        """
        clouds = [self._clouds[cloud]] if cloud in self._clouds else [] if cloud else self._clouds.values()
        return [o for found in clouds for o in found.with_accelerator(name)]

    def accelerator_names(self) -> AcceleratorNames:
        """The accelerator names any loaded cloud offers."""
        return AcceleratorNames(sorted({n for cloud in self._clouds.values()
                                        for n in cloud.accelerators() if n}))
