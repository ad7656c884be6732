"""Helpers for end-to-end cluster tests: node processes, sandboxes, waiting."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

MARKER = b"SKYK_NODE_ID="


def node_processes(skyk_home: str | None = None) -> dict[int, str]:
    """Return {pid: node id} of every live process of a local node under ``skyk_home``.

    Local nodes mark each process they start with SKYK_NODE_ID (see
    skyk.agent.runners), so this finds even processes that left their group;
    a node's HOME lies under the SKYK_HOME that made it (default: this
    test's), which keeps other tests' nodes out.
    """
    home = ("HOME=" + (skyk_home or os.environ["SKYK_HOME"]).rstrip("/") + "/").encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        items = environ.split(b"\0")
        if not any(item.startswith(home) for item in items):
            continue
        for item in items:
            if item.startswith(MARKER):
                found[int(entry.name)] = item[len(MARKER):].decode()
    return found


def kill_until_gone(find) -> None:
    """SIGKILL what ``find()`` returns, again and again, until it returns nothing.

    Repeats because a dying node may have just started another process.
    """
    import signal

    def kill() -> bool:
        pids = find()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not pids

    wait_for(kill, what="the processes to die")


def cmdlines(pids) -> list[str]:
    """Return the command lines of ``pids`` that still exist."""
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return out


def sandboxes(home: Path) -> list[Path]:
    """Return the local cloud's cluster directories under SKYK_HOME."""
    root = home / ".skyk" / "local"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def down_everything(skyk, home: Path) -> None:
    """Tear every cluster down and check that no node process or sandbox is left."""
    skyk("down", "-a", "-y", "--purge")
    assert node_processes() == {}, "node processes left behind"
    assert sandboxes(home) == [], "sandbox directories left behind"


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status_json(skyk) -> list[dict]:
    """Return ``skyk status -o json``."""
    result = skyk("status", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def netns_available() -> bool:
    """Whether local nodes get their own network namespaces here."""
    import shutil

    return os.geteuid() == 0 and shutil.which("ip") is not None and os.environ.get("SKYK_LOCAL_NETNS") != "0"
