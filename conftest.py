"""Shared fixtures: the real catalogs beside the repository, and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
#: Real AWS/GCP/Azure catalogs, kept outside the repository (../shared/catalogs).
SHARED_CATALOGS = REPO.parent / "shared" / "catalogs"
#: Where dev/install puts the suite's own cloud plugins (toy, flaky): on the path of the
#: tests and of every skyk they start, never in the venv a developer uses.
PLUGIN_SITE = REPO / "tests" / ".plugin-site"

if not (PLUGIN_SITE / "skyk_toycloud").is_dir():
    raise pytest.UsageError(f"the test plugins are not installed in {PLUGIN_SITE}; run dev/install")
sys.path.append(str(PLUGIN_SITE))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(PLUGIN_SITE)]))


@pytest.fixture(scope="session")
def shared_catalogs() -> Path:
    """The real catalogs directory; the suite needs it (CI places it beside the clone)."""
    if not (SHARED_CATALOGS / "aws" / "vms.csv").is_file():
        pytest.fail(f"real catalogs not found at {SHARED_CATALOGS}")
    return SHARED_CATALOGS


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache directory for the whole run, as a user's ~/.cache outlives each command.

    Parsed catalogs are cached there (keyed by the files they came from), so
    the tests do not parse the real catalogs again in every test.
    """
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch, shared_cache):
    """Keep each test away from the user's ~/.skyk, caches, cloud credentials and plugin blocks."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SKYK_HOME", str(home / ".skyk"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))
    for var in list(os.environ):
        if var.startswith(("AWS_", "AZURE_", "GOOGLE_", "CLOUDSDK_")) or var in (
                "SKYK_DISABLE_PLUGINS", "SKYK_CATALOG_DIR", "SKYK_CATALOG_SOURCE"):
            monkeypatch.delenv(var, raising=False)
    yield home
    _stop_jobs_controller(home / ".skyk" / "jobs" / "controller.lock")
    if (home / ".skyk" / "local").is_dir():
        # A test that made local clusters and did not tear them down must not
        # leave their processes, namespaces or addresses to the next tests.
        # Services first: 'down -a' leaves their replicas to them.
        for args in (("serve", "down", "-a", "-y"), ("down", "-a", "-y", "--purge")):
            subprocess.run([sys.executable, "-m", "skyk", *args], capture_output=True, timeout=120)


def _stop_jobs_controller(lock: Path) -> None:
    """Stop a jobs controller a test left running (it would outlive the test's SKYK_HOME)."""
    import signal

    if not lock.exists():
        return
    from skyk.jobs.daemon import running_pid

    pid = running_pid()  # None unless a process holds the lock: never a stale pid
    if pid and pid > 0:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture
def skyk(shared_catalogs):
    """Run the ``skyk`` CLI in a subprocess; returns a CompletedProcess with text output.

    ``env`` entries are added to (or, when None, removed from) the environment;
    the real catalogs are used unless the test sets SKYK_CATALOG_DIR itself.
    """

    def run(*args: str, env: dict[str, str | None] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env.setdefault("SKYK_CATALOG_DIR", str(shared_catalogs))
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        return subprocess.run([sys.executable, "-m", "skyk", *args], capture_output=True,
                              text=True, env=full_env, cwd=cwd, timeout=timeout)

    return run


@pytest.fixture
def serve_web(skyk, tmp_path, isolated_home):
    """``serve_web(task_text, **env)`` runs ``skyk serve up -n web`` and returns the endpoint.

    Afterwards ``skyk serve down web`` must succeed and leave nothing behind:
    no service, node process, sandbox, controller or router.
    """
    from serve_helpers import assert_nothing_left

    started: list[str] = []

    def start(text: str, **env: str) -> str:
        task = tmp_path / "web.yaml"
        task.write_text(text)
        result = skyk("serve", "up", "-n", "web", str(task), "-y", env=env)
        assert result.returncode == 0, result.stderr
        # The endpoint itself, not a shell expression to paste.
        assert f"endpoint: {result.stdout.strip()} " in result.stderr, result.stderr
        started.append(result.stdout.strip())
        return started[-1]

    yield start
    if started:
        down = skyk("serve", "down", "web", "-y", timeout=120)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(skyk, isolated_home, "web", started[0])
