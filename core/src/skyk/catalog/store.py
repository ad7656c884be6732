"""Where catalogs live, and the offerings of every enabled cloud in one place."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
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


@dataclass
class Catalog:
    """The offerings of the loaded clouds, and why any cloud has none."""

    offerings: dict[str, list[Offering]]
    errors: dict[str, str] = field(default_factory=dict)
    _by_accelerator: dict[str | None, list[Offering]] | None = field(default=None, init=False,
                                                                     repr=False)

    @classmethod
    def load(cls, kernel, directory: Path | None = None) -> Catalog:
        """Ask every loaded cloud plugin for its offerings (``skyk_catalog_offerings``)."""
        offerings, errors = kernel.offerings_by_cloud(directory or catalog_dir())
        return cls(offerings, errors)

    @property
    def clouds(self) -> list[str]:
        """Every loaded cloud, with or without offerings, sorted."""
        return sorted(set(self.offerings) | set(self.errors))

    def all(self) -> list[Offering]:
        """Every offering of every cloud."""
        return [o for batch in self.offerings.values() for o in batch]

    def with_accelerator(self, name: str | None) -> list[Offering]:
        """Offerings carrying accelerator ``name`` (canonical), or CPU-only ones for None."""
        if self._by_accelerator is None:
            index: dict[str | None, list[Offering]] = defaultdict(list)
            for offering in self.all():
                index[offering.accelerator].append(offering)
            self._by_accelerator = index
        return self._by_accelerator.get(name, [])

    def accelerator_names(self) -> AcceleratorNames:
        """The accelerator names any loaded cloud offers."""
        self.with_accelerator(None)
        return AcceleratorNames(n for n in self._by_accelerator if n)
