"""SkyPilot's volumes: task ``volumes:``, task ``volume_mounts`` and ``resources.volumes``.

skyk checks their shape, so a recipe that uses them reads cleanly and its
dry run plans, but it creates and attaches no volume yet: a real launch
stops with "not supported yet" (see ``skyk.lifecycle.nodes.check_mounts``).
"""

from __future__ import annotations

from typing import Any

from skyk.spec.disk import parse_disk_size
from skyk.spec.values import check_path

#: The fields of one ``resources.volumes`` entry (a disk attached to each node).
RESOURCE_VOLUME_FIELDS = ("path", "name", "disk_size", "disk_tier", "storage_type", "auto_delete",
                          "attach_mode")
#: The fields of one task ``volume_mounts`` entry.
VOLUME_MOUNT_FIELDS = ("path", "volume_name", "is_ephemeral", "sub_path", "volume_config")
_ATTACH_MODES = ("read_write", "read_only")


def _mount_path(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path.startswith(("/", "~")):
        raise ValueError(f"{what} {path!r} must be an absolute path | hint: write /mnt/data")
    return check_path(path, what, local=False)


def _fields(entry: Any, known: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"{what} must be a mapping | hint: write {{path: /mnt/data, ...}}")
    unknown = [k for k in entry if k not in known]
    if unknown:
        raise ValueError(f"unknown {what} field {str(unknown[0])!r} | hint: it takes {', '.join(known)}")
    return entry


def _name(value: Any, what: str) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{what} must be a volume name | hint: write the name of a volume, e.g. my-data")


def parse_task_volumes(value: Any) -> dict[str, Any]:
    """Check task ``volumes:``: mount path -> volume name (or the volume's own mapping)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of mount path to volume | hint: write volumes: {/mnt/data: my-volume}")
    for path, volume in value.items():
        _mount_path(path, "volume mount path")
        if isinstance(volume, dict):
            _name(volume.get("name"), f"volumes.{path}.name")
        else:
            _name(volume, f"volumes.{path}")
    return dict(value)


def _entries(value: Any, known: tuple[str, ...], field: str, example: str):
    """Yield (path in the spec, entry) for each mapping of a list field, its mount path checked."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list | hint: write {field}: [{example}]")
    for index, entry in enumerate(value):
        what = f"{field}[{index}]"
        entry = _fields(entry, known, what)
        _mount_path(entry.get("path"), f"{what}.path")
        yield what, entry


def _flag(entry: dict[str, Any], key: str, what: str) -> None:
    if not isinstance(entry.get(key, False), bool):
        raise ValueError(f"{what}.{key} must be true or false | hint: write {key}: true or {key}: false")


def parse_volume_mounts(value: Any) -> list[dict[str, Any]]:
    """Check task ``volume_mounts``: a list of {path, volume_name, ...}."""
    if value is None:
        return []
    for what, entry in _entries(value, VOLUME_MOUNT_FIELDS, "volume_mounts",
                                "{path: /mnt/data, volume_name: my-volume}"):
        _name(entry.get("volume_name"), f"{what}.volume_name")
        _flag(entry, "is_ephemeral", what)
        if not isinstance(entry.get("volume_config", {}), dict):
            raise ValueError(f"{what}.volume_config must be a mapping | hint: write volume_config: {{...}}")
    return list(value)


def parse_resource_volumes(value: Any) -> list[dict[str, Any]]:
    """Check ``resources.volumes``: a list of disks to attach, each {path, disk_size, ...}."""
    if value is None:
        return []
    for what, entry in _entries(value, RESOURCE_VOLUME_FIELDS, "volumes", "{path: /mnt/data, disk_size: 100}"):
        _name(entry.get("name"), f"{what}.name")
        if entry.get("disk_size") is not None:
            parse_disk_size(entry["disk_size"], f"{what}.disk_size")
        if entry.get("attach_mode", "read_write") not in _ATTACH_MODES:
            raise ValueError(f"{what}.attach_mode must be read_write or read_only"
                             " | hint: write attach_mode: read_write")
        _flag(entry, "auto_delete", what)
    return list(value)
