"""Plugin kinds, their entry-point groups, and the plugins core ships itself."""

from __future__ import annotations

import os

#: kind -> entry-point group. A plugin distribution declares e.g.
#: ``[project.entry-points."skyk.clouds"] aws = "skyk_aws.plugin"``.
GROUPS: dict[str, str] = {
    "cloud": "skyk.clouds",
    "runtime": "skyk.runtimes",
    "policy": "skyk.policies",
}

#: Core's own plugins, in registration order: (kind, name, module). They go
#: through the same registration path as entry-point plugins.
BUILTIN: tuple[tuple[str, str, str], ...] = (
    ("cloud", "local", "skyk.builtin.local_cloud"),
    ("policy", "default", "skyk.builtin.policies"),
    ("policy", "recovery", "skyk.builtin.recovery"),
)

CORE_DISTRIBUTION = "skyk-core"

DISABLE_ENV = "SKYK_DISABLE_PLUGINS"


def disabled_plugins() -> frozenset[str]:
    """Return the plugin names blocked by ``SKYK_DISABLE_PLUGINS`` (comma-separated)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return frozenset(n.strip().lower() for n in raw.split(",") if n.strip())
