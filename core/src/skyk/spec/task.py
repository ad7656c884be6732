"""The task: what to run, where, and how to serve it; loaded from YAML."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from skyk.errors import SpecError
from skyk.spec.base import SpecModel
from skyk.spec.envfill import fill, references
from skyk.spec.errors import spec_error
from skyk.spec.pool import Pool
from skyk.spec.resources import Resources
from skyk.spec.runtime import RuntimeSection
from skyk.spec.service import Service
from skyk.spec.storage import MountSource, StorageObject, is_url
from skyk.spec.task_config import ignored_warning, parse_config
from skyk.spec.values import check_env_name, check_path, check_safe_name, parse_data_sizes
from skyk.spec.volumes import parse_task_volumes, parse_volume_mounts
from skyk.spec.workdir import GitWorkdir, parse_git_workdir
from skyk.spec.yamlfile import load_yaml_mapping

#: Fields that ``envs`` are filled into (secrets never are: they stay off the records).
_FILLED_FIELDS = ("workdir", "file_mounts", "service", "runtime")
#: The most nodes one task may ask for.
MAX_NODES = 1000


def _check_text(value: str, what: str) -> str:
    # A NUL cannot pass through a command line or an environment; it would
    # fail on the node only after paying for it, so refuse it here.
    if "\0" in value:
        raise ValueError(f"{what} holds a NUL character (\\0)"
                         " | hint: remove it; commands and env values cannot carry one")
    return value


def _env_values(value: Any, section: str) -> Any:
    if not isinstance(value, dict):
        return value
    out: dict[str, str | None] = {}
    for key, item in value.items():
        check_env_name(key, f"{section} variable")
        if item is None or isinstance(item, str):
            out[key] = item if item is None else _check_text(item, f"{section}.{key}")
        elif isinstance(item, (bool, int, float)):
            out[key] = str(item)  # YAML reads 8 or true; jobs see text either way
        else:
            raise ValueError(f"{key} must be a string or number, got {item!r}"
                             " | hint: quote structured values, e.g. '[1, 2]'")
    return out


class Task(SpecModel):
    """A SkyPilot-compatible task, plus skyk's ``runtime`` section.

    ``runtime`` is data only here; :func:`skyk.runtime.resolve.resolve_task`
    turns it into ``setup``, ``run`` and a readiness probe.
    """

    name: str | None = None
    #: A local folder, or a git repository the nodes clone (:class:`GitWorkdir`).
    workdir: Any = None
    num_nodes: int = Field(default=1, ge=1, le=MAX_NODES)
    resources: Resources = Field(default_factory=Resources)
    envs: dict[str, str | None] = Field(default_factory=dict)
    secrets: dict[str, str | None] = Field(default_factory=dict)
    file_mounts: dict[str, MountSource] = Field(default_factory=dict)
    setup: str | None = None
    run: str | None = None
    service: Service | None = None
    runtime: RuntimeSection | None = None
    #: SkyPilot's per-task config overrides (see :mod:`skyk.spec.task_config`).
    config: Any = None
    #: Data the task reads and writes ({PATH_OR_URL: GB}); SkyPilot's optimizer
    #: weighs their egress, skyk accepts them and plans without them.
    inputs: Any = None
    outputs: Any = None
    #: Volumes to mount (see :mod:`skyk.spec.volumes`); checked, not made yet.
    volumes: Any = None
    volume_mounts: Any = None
    #: A pool of workers for managed jobs (see :mod:`skyk.spec.pool`).
    pool: Pool | None = None

    _source: str = PrivateAttr(default="<task>")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_safe_name(value, "task name")

    @field_validator("setup", "run")
    @classmethod
    def _commands(cls, value: str | None, info) -> str | None:
        return None if value is None else _check_text(value, info.field_name)

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value: Any) -> dict[str, Any] | None:
        return parse_config(value)

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _data_sizes(cls, value: Any, info) -> dict[str, float]:
        return parse_data_sizes(value, info.field_name)

    @field_validator("volumes", mode="before")
    @classmethod
    def _volumes(cls, value: Any) -> dict[str, Any]:
        return parse_task_volumes(value)

    @field_validator("volume_mounts", mode="before")
    @classmethod
    def _volume_mounts(cls, value: Any) -> list[dict[str, Any]]:
        return parse_volume_mounts(value)

    @model_validator(mode="after")
    def _pool_task(self) -> Task:
        if self.pool is not None and self.run:
            raise ValueError("a pool task has no run; jobs sent to the pool bring their own"
                             " | hint: remove run (keep setup for the workers), or remove pool")
        if self.pool is not None and self.service is not None:
            raise ValueError("give either pool or service, not both"
                             " | hint: a pool runs managed jobs, a service serves requests")
        return self

    @field_validator("workdir", mode="before")
    @classmethod
    def _workdir(cls, value: Any) -> str | GitWorkdir | None:
        if value is None or isinstance(value, GitWorkdir):
            return value
        if isinstance(value, str):
            return check_path(value, "workdir", local=True)
        if isinstance(value, dict):
            return parse_git_workdir(value)
        raise ValueError(f"expected a local path or a git repository, got {value!r}"
                         " | hint: write workdir: ./src or workdir: {url: https://github.com/ORG/REPO, ref: main}")

    @property
    def local_workdir(self) -> str | None:
        """The local folder synced to the nodes as workdir, or None (none, or a git workdir)."""
        return self.workdir if isinstance(self.workdir, str) else None

    @property
    def git_workdir(self) -> GitWorkdir | None:
        """The git repository the nodes clone as workdir, or None."""
        return self.workdir if isinstance(self.workdir, GitWorkdir) else None

    @field_validator("envs", "secrets", mode="before")
    @classmethod
    def _envs(cls, value: Any, info) -> Any:
        return _env_values(value, info.field_name)

    @field_validator("file_mounts")
    @classmethod
    def _mounts(cls, value: dict[str, Any]) -> dict[str, Any]:
        for dest, src in value.items():
            _check_destination(dest, _is_bucket(src))
            if isinstance(src, str):
                check_path(src, f"file_mounts source for {dest}", local=not is_url(src))
        return value

    def warn_ignored(self) -> None:
        """Print, on stderr, one line naming what the task sets that skyk does not act on."""
        line = ignored_warning(self.config, self.source)
        if line:
            print(line, file=sys.stderr)

    @property
    def source(self) -> str:
        """Where this task came from (its YAML path), for error messages."""
        return self._source

    def with_overrides(self, envs: Iterable[str] = (), secrets: Iterable[str] = ()) -> Task:
        """Return a copy with ``--env``/``--secret`` overrides applied and ``envs`` filled in.

        Each override is ``KEY=VALUE``, or ``KEY`` to take the value from this
        process's environment. The resulting ``envs`` then fill ``$KEY`` in
        ``workdir``, ``file_mounts``, ``service`` and ``runtime``, as SkyPilot
        does (see :mod:`skyk.spec.envfill`).
        """
        updates: dict[str, Any] = {}
        for field, flag, items in (("envs", "--env", envs), ("secrets", "--secret", secrets)):
            merged = dict(getattr(self, field))
            for item in items:
                key, value = _parse_override(item, flag)
                merged[key] = value
            updates[field] = merged
        for field in _FILLED_FIELDS:
            updates[field] = fill(getattr(self, field), updates["envs"])
        task = self.model_copy(update=updates)
        task._source = self._source
        return task

    def with_num_nodes(self, count: int, flag: str) -> Task:
        """Return a copy on ``count`` nodes, checked as ``num_nodes`` is; errors name ``flag``."""
        try:
            type(self).model_validate({"num_nodes": count})
        except ValidationError as exc:
            error = spec_error("", exc)
            raise SpecError(f"{flag}: {error.message.split(': ', 2)[-1]}", hint=error.hint) from None
        task = self.model_copy(update={"num_nodes": count})
        task._source = self._source
        return task

    def check_ready(self) -> None:
        """Raise ``SpecError`` if the task cannot run as written on this machine.

        Every env/secret needs a value and every local path must exist.
        """
        for field, flag in (("envs", "--env"), ("secrets", "--secret")):
            for key, value in getattr(self, field).items():
                if value is None:
                    raise SpecError(f"{self.source}: {field}.{key} has no value",
                                    hint=f"pass {flag} {key}=VALUE, or export {key} and pass {flag} {key}")
        if self.local_workdir is not None:
            if not _is_dir(self.local_workdir, f"{self.source}: workdir"):
                raise SpecError(f"{self.source}: workdir: {self.local_workdir} is not a directory",
                                hint="workdir is relative to where you run skyk; create it or fix the path")
        for dest, src in self.file_mounts.items():
            unset = references(dest)
            if unset:
                raise SpecError(f"{self.source}: file_mounts.{dest}: the destination names ${unset[0]},"
                                " which envs does not set",
                                hint=f"add {unset[0]} to envs, or pass --env {unset[0]}=VALUE")
            try:
                _check_destination(dest, _is_bucket(src))  # again: envs may have filled in what was not
            except ValueError as exc:
                message, _, hint = str(exc).partition(" | hint: ")
                raise SpecError(f"{self.source}: file_mounts.{dest}: {message}", hint=hint) from None
            local = ([src] if isinstance(src, str) and not is_url(src) else
                     src.local_sources if isinstance(src, StorageObject) else [])
            for path in local:
                if _is_dir(path, f"{self.source}: file_mounts.{dest}") is None:
                    raise SpecError(f"{self.source}: file_mounts.{dest}: {path} does not exist",
                                    hint="local sources are relative to where you run skyk")


def _is_bucket(source: str | StorageObject) -> bool:
    return isinstance(source, StorageObject) or is_url(source)


def _check_destination(dest: str, bucket: bool) -> None:
    """Check a file mount destination (before and after envs fill it); raise ValueError."""
    if bucket and not dest.startswith(("/", "~")) and not references(dest):
        # A bucket is mounted (or copied) by the nodes themselves, at a path of their own.
        raise ValueError(f"file_mounts destination {dest!r} of a bucket is not absolute"
                         " | hint: mount buckets at an absolute path, e.g. /data, or under ~, e.g. ~/data")
    # A relative destination lands in the workdir on the node, as in SkyPilot;
    # '..' would climb out of it.
    if not dest.strip() or (not dest.startswith(("/", "~")) and ".." in dest.split("/")):
        raise ValueError(f"file_mounts destination {dest!r} must be a path inside the workdir,"
                         " or absolute | hint: write data (in ~/sky_workdir), /data or ~/data")
    check_path(dest, "file_mounts destination", local=False)


def _is_dir(path: str, where: str) -> bool | None:
    """Whether local ``path`` is a directory (None: it does not exist); SpecError if unreadable."""
    try:
        return stat.S_ISDIR(Path(path).expanduser().stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise SpecError(f"{where}: cannot check {path}: {exc.strerror}",
                        hint="check the path and its permissions") from None


def _parse_override(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    try:
        check_env_name(key)
    except ValueError as exc:
        message, _, hint = str(exc).partition(" | hint: ")
        raise SpecError(f"{flag} {item}: {message}", hint=hint or None) from None
    if sep:
        return key, value
    if key not in os.environ:
        raise SpecError(f"{flag} {key}: {key} is not set in your environment",
                        hint=f"export {key}=..., or pass {flag} {key}=VALUE")
    return key, os.environ[key]


def task_from_mapping(data: dict[str, Any], source: str) -> Task:
    """Validate a parsed YAML mapping as a Task, naming ``source`` in errors."""
    try:
        task = Task.model_validate(data)
    except ValidationError as exc:
        raise spec_error(source, exc) from None
    task._source = source
    return task


def load_task(path: str | os.PathLike[str]) -> Task:
    """Read and validate a task YAML file; errors are one-line ``SpecError``s."""
    return task_from_mapping(load_yaml_mapping(path, "task"), str(path))
