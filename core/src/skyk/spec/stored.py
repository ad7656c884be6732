"""A task as a controller stores it: command-line overrides applied, local paths made absolute.

A controller (a service's, the managed jobs') runs in another directory, long
after the command that handed it the task, and without the runtime plugin
that may have filled the task in: what it stores must stand on its own.
"""

from __future__ import annotations

import os

from skyk.spec.storage import StorageObject, is_url
from skyk.spec.task import Task


def stored_mapping(mapping: dict, task: Task) -> dict:
    """Return ``mapping`` (the YAML ``task`` was read from) as a controller stores it.

    ``task`` is the validated task with its overrides applied: its envs and
    secrets replace the mapping's, a ``runtime:`` is resolved into plain
    fields, and the local workdir and file-mount sources become absolute.
    """
    mapping = dict(mapping, envs=dict(task.envs), secrets=dict(task.secrets))
    if "num_nodes" in mapping or task.num_nodes != 1:  # --num-nodes
        mapping["num_nodes"] = task.num_nodes
    if task.runtime is not None:
        from skyk.runtime.resolve import resolve_mapping

        mapping = resolve_mapping(mapping, task)
    if task.local_workdir:
        mapping["workdir"] = _absolute(task.local_workdir)
    if task.file_mounts:
        mapping["file_mounts"] = {dest: pinned_mount(src) for dest, src in task.file_mounts.items()}
    return mapping


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def pinned_mount(source):
    """A ``file_mounts`` value as a controller stores it: local paths made absolute."""

    def pin(path: str) -> str:
        return path if is_url(path) else _absolute(path)

    if isinstance(source, StorageObject):
        mapping = source.model_dump(exclude_none=True)
        if source.local_sources:
            mapping["source"] = ([pin(p) for p in source.source] if isinstance(source.source, list)
                                 else pin(source.source))
        return mapping
    return pin(source)
