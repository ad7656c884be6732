"""rclone on a node: its configuration for the stores a task uses, and its environment.

A node gets one rclone configuration file holding a remote per store its
task uses (named for the store: ``s3``, ``gcs``, ``azure``), and the secret
files those remotes refer to. Both are written with mode 0600 in a directory
only the node's user can enter, and rclone is pointed at the file by
``RCLONE_CONFIG``: no secret is ever on a command line.

The remotes come in the JSON form the CLI sends (what
``NodeAccess.as_json()`` makes): for each remote name, ``{"remote": {...},
"files": {NAME: BASE64}, "env": {...}, "unset_env": [...]}``.
Standard library only: this module is shipped to nodes with the agent.
"""

from __future__ import annotations

import base64
import binascii
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from . import layout

#: where a store's files are named in its remote's options
FILES_MARK = "{files}"

#: what rclone accepts as a remote's name, and what is safe as a directory name
_REMOTE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_OPTION_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: names a remote cannot have: what else lives beside the config (the bucket mounts' caches)
RESERVED_NAMES = ("cache",)


def check_remotes(remotes: object) -> str | None:
    """Return what is wrong with ``remotes`` (the JSON form), or None if rclone can be given it.

    A value holding a line break would add lines of its own to the config
    file, so none may.
    """
    if not isinstance(remotes, dict) or not remotes:
        return "remotes must be a non-empty object"
    for name, access in remotes.items():
        if not isinstance(name, str) or not _REMOTE_NAME.match(name) or name in RESERVED_NAMES:
            return f"{name!r} is not a valid rclone remote name"
        if not isinstance(access, dict) or not isinstance(access.get("remote"), dict):
            return f"remote {name}: an object with a 'remote' object is expected"
        for key, value in access["remote"].items():
            if not _OPTION_NAME.match(str(key)) or not isinstance(value, str) or _breaks_line(value):
                return f"remote {name}: option {key!r} is not a single-line string option"
        files = access.get("files") or {}
        if not isinstance(files, dict):
            return f"remote {name}: files must be an object"
        for file_name, content in files.items():
            if not _FILE_NAME.match(str(file_name)) or not isinstance(content, str):
                return f"remote {name}: file {file_name!r} must be a plain name with base64 contents"
            try:
                base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                return f"remote {name}: file {file_name} is not valid base64"
        env = access.get("env") or {}
        if not isinstance(env, dict) or not all(
                isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) and "\0" not in v
                for k, v in env.items()):
            return f"remote {name}: env must map variable names to strings"
        unset = access.get("unset_env") or []
        if not isinstance(unset, list) or not all(isinstance(v, str) for v in unset):
            return f"remote {name}: unset_env must be a list of variable names"
    return None


def _breaks_line(value: str) -> bool:
    return any(c in value for c in "\r\n\0")


def write_config(directory: Path, remotes: Mapping[str, Mapping]) -> Path:
    """Write ``rclone.conf`` and the remotes' secret files into ``directory``; return the config's path.

    ``directory`` is created with mode 0700 if
    needed. A remote's option that names ``{files}/NAME`` gets the absolute
    path of the file written for it. Files are replaced atomically, so an
    rclone starting meanwhile reads the old file or the new one.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    layout.private_dir(directory)
    lines: list[str] = []
    for remote_name, access in sorted(remotes.items()):
        files_dir = directory / remote_name
        files = access.get("files") or {}
        if files:
            layout.private_dir(files_dir)
        for file_name, content in files.items():
            layout.write_file(files_dir / file_name, base64.b64decode(content), mode=0o600)
        lines.append(f"[{remote_name}]")
        for key, value in access["remote"].items():
            lines.append(f"{key} = {value.replace(FILES_MARK, str(files_dir))}")
        lines.append("")
    config = directory / "rclone.conf"
    layout.write_file(config, "\n".join(lines), mode=0o600)
    return config


def remove_config(directory: Path) -> None:
    """Remove what :func:`write_config` wrote into ``directory``: the config and the remotes' secret files."""
    config = directory / "rclone.conf"
    try:
        sections = re.findall(r"^\[([^\]\n]+)\]$", config.read_text(), re.MULTILINE)
    except FileNotFoundError:
        return
    for name in sections:
        if _REMOTE_NAME.match(name) and name not in RESERVED_NAMES:
            shutil.rmtree(directory / name, ignore_errors=True)
    config.unlink(missing_ok=True)


def environment(config: Path, remotes: Mapping[str, Mapping], base: Mapping[str, str]) -> dict[str, str]:
    """Return the environment rclone runs with: ``base`` and the remotes' variables, less what they unset."""
    env = dict(base)
    for access in remotes.values():
        for name in access.get("unset_env") or ():
            env.pop(name, None)
        env.update(access.get("env") or {})
    env["RCLONE_CONFIG"] = str(config)
    return env
