"""Accelerator names: case-insensitive canonicalisation and suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from skyk.catalog.known_accelerators import KNOWN_ACCELERATORS
from skyk.errors import NoFeasibleResources, SpecError

# Letters people type for look-alike digits (A1OO, Al00); compared as digits.
_LOOKALIKES = str.maketrans("oil", "011")


def _key(name: str) -> str:
    return name.casefold().translate(_LOOKALIKES)


class AcceleratorNames:
    """The accelerator names the loaded catalogs offer, among every name SkyPilot knows."""

    def __init__(self, names: Iterable[str]):
        self._by_folded = {n.casefold(): n for n in names}
        # A catalog's own spelling wins over SkyPilot's (Azure's MI25 stays MI25).
        self._known = {n.casefold(): n for n in KNOWN_ACCELERATORS} | self._by_folded

    def canonical(self, name: str, where: str = "accelerators") -> str:
        """Return the spelling of ``name`` (the catalogs', else SkyPilot's), matched case-insensitively.

        A name no loaded catalog offers but SkyPilot knows (``L40``) is returned
        too; callers check ``name in self`` for whether anything offers it.
        Raises ``SpecError`` with the closest known names when the name is
        unknown everywhere.
        """
        found = self._known.get(name.casefold())
        if found:
            return found
        by_key = {_key(n): n for n in self._known.values()}
        close = difflib.get_close_matches(_key(name), list(by_key), n=3, cutoff=0.5)
        suggestion = ", ".join(by_key[c] for c in close)
        message = f"{where}: unknown accelerator '{name}'"
        if suggestion:
            message += f"; did you mean {suggestion}?"
        raise SpecError(message, hint="'skyk show-gpus' lists the accelerators of every enabled cloud")

    def __contains__(self, name: str) -> bool:
        """Whether a loaded catalog offers ``name``."""
        return name.casefold() in self._by_folded

    def __iter__(self):
        """The offered names, sorted case-insensitively."""
        return iter(sorted(self._by_folded.values(), key=str.casefold))


def not_offered(names: Iterable[str], clouds: Iterable[str] | None, where: str) -> NoFeasibleResources:
    """The error for accelerators that are real but that no cloud in scope offers.

    ``clouds`` are the clouds the request is pinned to (None: every installed one).
    """
    wanted = ", ".join(dict.fromkeys(names))
    pinned = sorted(clouds or ())
    hint = "'skyk show-gpus' lists the accelerators the installed clouds offer"
    if not pinned:
        scope = f"no installed cloud offers {wanted}"
        hint += "; name one of those, or install a cloud plugin that offers it"
    elif len(pinned) == 1:
        scope = f"the {pinned[0]} cloud offers no {wanted}"
        hint = f"'skyk show-gpus --cloud {pinned[0]}' lists what it offers; name one of those or another cloud"
    else:
        scope = f"none of the clouds {', '.join(pinned)} offers {wanted}"
        hint += "; name one they offer, or another cloud"
    return NoFeasibleResources(f"{where}: {scope}", hint=hint)
