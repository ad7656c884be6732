"""The task-level ``config:`` block: SkyPilot's per-task overrides of its config file.

SkyPilot lets a task override a few settings of ``~/.sky/config.yaml``
(``docker.run_options``, ``kubernetes.provision_timeout``,
``gcp.managed_instance_group``, ``nvidia_gpus.disable_ecc``...). None of
them is a setting skyk has (it runs no Docker or Kubernetes and sets no
ECC mode), so skyk accepts the block, checks its shape, applies nothing
and names every key it ignores in one warning, so a recipe written for
SkyPilot runs unchanged and its author sees what had no effect.
"""

from __future__ import annotations

from typing import Any


def parse_config(value: Any) -> dict[str, Any] | None:
    """Check ``config:``: a mapping of sections (``docker``, ``kubernetes``...) to mappings."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of sections to settings"
                         " | hint: write config: {kubernetes: {provision_timeout: 600}}")
    for section, body in value.items():
        if not isinstance(section, str) or not section:
            raise ValueError(f"section {section!r} is not a name"
                             " | hint: sections are names such as docker or kubernetes")
        if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
            raise ValueError(f"section {section} must be a mapping of settings"
                             f" | hint: write config: {{{section}: {{setting: value}}}}")
    return dict(value)


def ignored_keys(config: dict[str, Any] | None) -> list[str]:
    """The settings of ``config:`` that skyk does not apply, as dotted names (all of them)."""
    return [f"{section}.{key}" for section, body in (config or {}).items() for key in body]


def ignored_warning(config: dict[str, Any] | None, source: str) -> str | None:
    """The one warning line naming what ``config:`` sets that skyk ignores, or None."""
    keys = ignored_keys(config)
    if not keys:
        return None
    return (f"skyk: warning: {source}: config: skyk has no setting for {', '.join(keys)};"
            " ignored (a SkyPilot config override)")
