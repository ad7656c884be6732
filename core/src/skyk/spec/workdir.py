"""``workdir`` as a git repository: ``{url: GIT_URL, ref: REF}``, as SkyPilot takes it.

Instead of syncing a local folder, each node clones the repository into
the workdir location and checks out ``ref`` (a branch, tag or commit; the
default branch when left out).
"""

from __future__ import annotations

import re
from typing import Any

from skyk.spec.base import SpecModel

#: The URL forms git clones from: a scheme it speaks, or scp-like ``user@host:path``.
_GIT_URL = re.compile(r"^(?:(?:https?|ssh|git|file)://\S+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+)$")
_FIELDS = ("url", "ref")


class GitWorkdir(SpecModel):
    """A git repository (and optional ref) the nodes clone as their workdir."""

    url: str
    ref: str | None = None

    def describe(self) -> str:
        """``URL`` or ``URL@REF``, for plans and messages."""
        return f"{self.url}@{self.ref}" if self.ref else self.url


def _check(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"workdir.{what} must be a non-empty string | hint: write {what}: {example}")
    # A leading '-' would reach git as an option; whitespace or NUL never names a repository or ref.
    if value.startswith("-") or re.search(r"[\s\0]", value):
        raise ValueError(f"workdir.{what} {value[:40]!r} cannot start with '-' or hold spaces"
                         f" | hint: write {what}: {example}")
    return value


def parse_git_workdir(value: dict[Any, Any]) -> GitWorkdir:
    """Check a ``{url, ref}`` mapping and return it as a GitWorkdir; raise ValueError with a hint."""
    unknown = [k for k in value if k not in _FIELDS]
    if unknown:
        raise ValueError(f"unknown workdir field {str(unknown[0])!r}"
                         " | hint: a git workdir takes url and ref")
    if "url" not in value:
        raise ValueError("a git workdir needs url | hint: write workdir: {url: https://github.com/ORG/REPO}")
    url = _check(value["url"], "url", "https://github.com/ORG/REPO")
    if not _GIT_URL.match(url):
        raise ValueError(f"workdir.url {url[:60]!r} is not a git URL"
                         " | hint: use https://, ssh://, git://, file:// or user@host:path")
    ref = value.get("ref")
    if ref is not None:
        ref = _check(ref, "ref", "main (a branch, tag or commit)")
        if ".." in ref:
            raise ValueError(f"workdir.ref {ref[:40]!r} holds '..' | hint: name one branch, tag or commit")
    return GitWorkdir(url=url, ref=ref)
