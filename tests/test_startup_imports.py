"""``import skyk`` and CLI start-up stay light: no cloud SDK, pandas or web framework."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = ("boto3", "botocore", "google.cloud", "google.auth", "google.oauth2", "googleapiclient",
             "azure", "pandas", "numpy", "falcon", "gunicorn", "skyk_router", "requests")

PROBE = """
import sys
{body}
bad = sorted(m for m in sys.modules if m.split('.')[0] in {roots!r} or m.startswith({prefixes!r}))
print(','.join(bad))
"""


def loaded_forbidden(body: str, env_extra: dict | None = None) -> str:
    roots = tuple(m for m in FORBIDDEN if "." not in m)
    prefixes = tuple(m for m in FORBIDDEN if "." in m)
    code = PROBE.format(body=body, roots=roots, prefixes=prefixes)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env_extra)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def test_import_skyk_is_light():
    assert loaded_forbidden("import skyk, skyk.hookspecs") == ""
    assert loaded_forbidden("import skyk\nassert 'pydantic' not in sys.modules") == ""


@pytest.mark.parametrize("argv", [
    ["--help"], ["launch", "--help"], ["show-gpus", "A100"], ["plugins"],
    ["launch", "--dryrun", "{task}"],
])
def test_cli_commands_load_no_sdk(argv, tmp_path, shared_catalogs, monkeypatch):
    task = tmp_path / "task.yaml"
    task.write_text("resources:\n  accelerators: A100:8\n")
    argv = [a.format(task=task) for a in argv]
    monkeypatch.setenv("SKYK_CATALOG_DIR", str(shared_catalogs))
    body = ("import io, contextlib\nfrom skyk.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass")
    assert loaded_forbidden(body) == ""


def test_help_does_not_load_pydantic_or_plugins():
    body = ("import io, contextlib\nfrom skyk.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "assert 'pydantic' not in sys.modules, 'pydantic'\n"
            "assert 'stevedore' not in sys.modules, 'stevedore'\n"
            "assert not any(m.startswith('skyk_') for m in sys.modules)")
    assert loaded_forbidden(body) == ""


@pytest.mark.parametrize("argv", [["status"], ["status", "-o", "json"], ["cost-report"], ["serve", "status"],
                                  ["serve", "status", "-o", "json"]])
def test_local_state_commands_load_no_plugin_or_pydantic(argv):
    # 'status' answers from the state database: nothing else may load.
    body = ("import io, contextlib\nfrom skyk.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main({argv!r}) == 0\n"
            "assert 'pydantic' not in sys.modules, 'pydantic'\n"
            "assert 'stevedore' not in sys.modules, 'stevedore'\n"
            "assert 'pluggy' not in sys.modules, 'pluggy'\n"
            "assert not any(m.startswith('skyk_') for m in sys.modules)")
    assert loaded_forbidden(body) == ""


@pytest.mark.parametrize("argv", [["show-gpus", "A100"], ["show-gpus"], ["show-gpus", "--all-regions", "T4:1"]])
def test_commands_that_list_clouds_or_prices_load_no_task_spec(argv, shared_catalogs, monkeypatch):
    # They read plugins and catalogs only: the spec's pydantic models and PyYAML are a dry run's cost.
    monkeypatch.setenv("SKYK_CATALOG_DIR", str(shared_catalogs))
    body = ("import io, contextlib\nfrom skyk.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main({argv!r}) in (0, 1)\n"
            "assert 'pydantic' not in sys.modules, 'pydantic'\n"
            "assert 'yaml' not in sys.modules, 'yaml'\n"
            "assert 'skyk.spec.task' not in sys.modules, 'skyk.spec.task'")
    assert loaded_forbidden(body) == ""
