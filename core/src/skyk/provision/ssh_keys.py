"""The user's SSH key pair, made once under ``SKYK_HOME`` and injected into every node.

Clouds put the public key on a node at creation (cloud-init, instance
metadata), so no cloud-side key pair objects exist to leak or hit limits on.
The head node gets a copy of the private key (see
:func:`skyk.lifecycle.nodes.start_agent`) to reach the workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from skyk.catalog.store import private_home
from skyk.errors import SkykError

#: Where the private key lives under ``SKYK_HOME``; ``.pub`` beside it.
KEY_PATH = ("ssh", "skyk-key")


@dataclass(frozen=True)
class UserKey:
    """A key pair: the private key's path and the public key's ``authorized_keys`` line."""

    private: Path
    public: str


def user_key() -> UserKey:
    """Return the user's key pair, making it (ed25519, private key 0600) on first use.

    Safe against two ``skyk`` processes making it at the same moment: one
    makes it under a lock, the other then reads it.
    """
    directory = private_home().joinpath(*KEY_PATH[:-1])
    directory.mkdir(mode=0o700, exist_ok=True)
    private = directory / KEY_PATH[-1]
    public = private.with_suffix(".pub")
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (private.is_file() and public.is_file()):
            _generate(private)
    return UserKey(private, public.read_text().strip())


def _generate(private: Path) -> None:
    """Write a new key pair at ``private`` (and ``.pub``) atomically."""
    staged = private.with_name(f".{private.name}.{os.getpid()}")
    staged_public = Path(f"{staged}.pub")  # ssh-keygen's name for it
    for path in (staged, staged_public):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "skyk", "-f", str(staged)],
                       check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise SkykError("ssh-keygen is not installed, so skyk cannot make its SSH key",
                        hint="install OpenSSH's client (apt install openssh-client)") from None
    except (subprocess.SubprocessError, OSError) as exc:
        raise SkykError(f"could not make skyk's SSH key in {private.parent}: {exc}") from None
    os.chmod(staged, 0o600)
    # The public key first: a private key without it is made again.
    os.replace(staged_public, private.with_suffix(".pub"))
    os.replace(staged, private)
