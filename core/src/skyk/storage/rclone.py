"""rclone on a node: its configuration for the stores a task uses, and its environment.

A node gets one rclone configuration file holding a remote per store its
task uses (named for the store: ``s3``, ``gcs``, ``azure``), and the secret
files those remotes refer to. Both are written with mode 0600 in a directory
only the node's user can enter, and rclone is pointed at the file by
``RCLONE_CONFIG``: no secret is ever on a command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from skyk.storage.store import NodeAccess

#: where a store's files are named in its remote's options
FILES_MARK = "{files}"


def write_config(directory: Path, remotes: Mapping[str, NodeAccess]) -> Path:
    """Write ``rclone.conf`` and the remotes' secret files into ``directory``; return the config's path.

    ``directory`` is created with mode 0700 if needed. A remote's option that
    names ``{files}/NAME`` gets the absolute path of the file written for it.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    lines: list[str] = []
    for remote_name, access in sorted(remotes.items()):
        files_dir = directory / remote_name
        if access.files:
            files_dir.mkdir(mode=0o700, exist_ok=True)
        for file_name, content in access.files.items():
            _write_private(files_dir / file_name, content)
        lines.append(f"[{remote_name}]")
        for key, value in access.remote.items():
            lines.append(f"{key} = {value.replace(FILES_MARK, str(files_dir))}")
        lines.append("")
    config = directory / "rclone.conf"
    _write_private(config, "\n".join(lines).encode())
    return config


def environment(config: Path, remotes: Mapping[str, NodeAccess], base: Mapping[str, str]) -> dict[str, str]:
    """Return the environment rclone runs with: ``base`` and the remotes' variables, less what they unset."""
    env = dict(base)
    for access in remotes.values():
        for name in access.unset_env:
            env.pop(name, None)
        env.update(access.env)
    env["RCLONE_CONFIG"] = str(config)
    return env


def _write_private(path: Path, content: bytes) -> None:
    # Created 0600 from the start, so the secret is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)
