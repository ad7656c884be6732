"""Accelerator names: case-insensitive canonicalisation and suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from skyk.errors import SpecError

# Letters people type for look-alike digits (A1OO, Al00); compared as digits.
_LOOKALIKES = str.maketrans("oil", "011")


def _key(name: str) -> str:
    return name.casefold().translate(_LOOKALIKES)


class AcceleratorNames:
    """The canonical accelerator names the loaded catalogs know about."""

    def __init__(self, names: Iterable[str]):
        self._by_folded = {n.casefold(): n for n in names}

    def canonical(self, name: str, where: str = "accelerators") -> str:
        """Return the catalog spelling of ``name``, matched case-insensitively.

        Raises ``SpecError`` with the closest known names when there is no match.
        """
        found = self._by_folded.get(name.casefold())
        if found:
            return found
        by_key = {_key(n): n for n in self._by_folded.values()}
        close = difflib.get_close_matches(_key(name), list(by_key), n=3, cutoff=0.5)
        suggestion = ", ".join(by_key[c] for c in close)
        message = f"{where}: unknown accelerator '{name}'"
        if suggestion:
            message += f"; did you mean {suggestion}?"
        raise SpecError(message, hint="'skyk show-gpus' lists the accelerators of every enabled cloud")

    def __contains__(self, name: str) -> bool:
        return name.casefold() in self._by_folded

    def __iter__(self):
        return iter(sorted(self._by_folded.values(), key=str.casefold))
