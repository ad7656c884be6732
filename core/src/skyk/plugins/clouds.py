"""Which cloud plugins a command loads: the names it was given checked, and which have credentials.

Kept apart from the optimizer so that commands that only list clouds or
prices (``check``, ``show-gpus``, ``catalog``) never import the task spec.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from skyk.errors import SpecError
from skyk.plugins.kinds import disabled_plugins
from skyk.plugins.manager import Kernel, discover


def check_cloud_names(pins: Iterable[tuple[str | None, str]]) -> set[str] | None:
    """Return the pinned cloud names, or None if any alternative may use every cloud.

    ``pins`` holds, per alternative, its cloud (None when it names none) and
    where that was written (``task.yaml: resources.cloud``, ``--cloud``).
    Raises ``SpecError`` for a cloud that is not installed or is disabled,
    naming where it was written.
    """
    pins = list(pins)
    # Every pin is checked, even when another alternative leaves the cloud
    # open: a misspelt cloud in one any_of entry must not be silently dropped.
    pinned = {cloud for cloud, _ in pins}
    if pinned == {None}:
        return None
    installed = sorted({name for name, _ in discover("cloud")})
    blocked = disabled_plugins()
    for cloud, where in pins:
        if cloud is None:
            continue
        if cloud in blocked:
            raise SpecError(f"{where}: cloud '{cloud}' is disabled by SKYK_DISABLE_PLUGINS",
                            hint="remove it from SKYK_DISABLE_PLUGINS or pick another cloud")
        if cloud not in installed:
            close = difflib.get_close_matches(cloud, installed, n=1, cutoff=0.5)
            message = f"{where}: unknown cloud '{cloud}'"
            if close:
                message += f"; did you mean {close[0]}?"
            raise SpecError(message, hint=f"installed clouds: {', '.join(installed)};"
                            " from a skyk checkout, pip install ./plugins/<cloud> adds one")
    if None in pinned:
        return None
    return pinned  # type: ignore[return-value]


def load_clouds(clouds: list[str] | None, origin: str) -> Kernel:
    """Load the cloud plugins a command names (all when ``clouds`` is empty or None).

    ``origin`` (a flag or command) prefixes the error for an unknown cloud.
    """
    names = check_cloud_names((c.lower(), origin) for c in clouds) if clouds else None
    return Kernel.load(("cloud",), names)


def disabled_clouds(kernel: Kernel) -> dict[str, str]:
    """The loaded clouds whose credentials check fails (as ``skyk check`` shows them), and why.

    The checks read local files only, so this costs no network.
    """
    disabled = {}
    for name, cloud in kernel.clouds().items():
        try:
            check = cloud.check_credentials()
        except Exception as exc:  # noqa: BLE001 - a broken check disables its cloud only
            disabled[name] = f"credential check failed: {exc}"
            continue
        if not check.ok:
            disabled[name] = check.reason
    return disabled
