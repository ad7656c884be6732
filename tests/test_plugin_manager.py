"""Plugin discovery: broken plugins are reported, duplicates named, blocks honoured.

Fake plugin distributions are written as ``*.dist-info`` folders on a
temporary PYTHONPATH, which is exactly how installed packages are found.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from skyk.plugins.manager import Kernel

CLOUD_MODULE = '''
from skyk.hookspecs import hookimpl
from skyk.provision.cloud import Cloud, CredentialCheck
from skyk.catalog.offering import Offering

class Fake(Cloud):
    name = {cloud!r}
    def check_credentials(self):
        return CredentialCheck(True, "fake credentials")

@hookimpl
def skyk_clouds():
    return [Fake()]

@hookimpl
def skyk_catalog_offerings(catalog_dir):
    return [Offering({cloud!r}, "fake.gpu", 4.0, 16.0, "fake-1", None, 0.5, None, "FakeGPU", 1.0)]
'''


def fake_dist(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str],
              group: str = "skyk.clouds") -> None:
    """Write an installed-looking distribution with entry points in ``group``."""
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    return root


def run_with(skyk, site, *args, **env):
    return skyk(*args, env={"PYTHONPATH": str(site), "XDG_CACHE_HOME": str(site.parent / "cache"),
                            **env})


def test_a_broken_plugin_is_reported_and_the_rest_keep_working(skyk, site, tmp_path):
    fake_dist(site, "skyk-broken", {"broken": "broken_plugin"},
              {"broken_plugin": "import not_installed_sdk\n"})
    fake_dist(site, "skyk-fakecloud", {"fake": "fake_plugin"},
              {"fake_plugin": CLOUD_MODULE.format(cloud="fake")})
    result = run_with(skyk, site, "plugins", "-o", "json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    broken = plugins["broken"]
    assert broken["distribution"] == "skyk-broken" and broken["version"] == "1.2.3"
    assert "ModuleNotFoundError" in broken["error"] and "not_installed_sdk" in broken["error"]
    assert plugins["fake"]["status"] == "ok" and plugins["aws"]["status"] == "ok"

    task = tmp_path / "task.yaml"
    task.write_text("resources:\n  accelerators: FakeGPU\n")
    result = run_with(skyk, site, "launch", "--dryrun", str(task))
    assert result.returncode == 0, result.stderr
    assert "fake/fake-1" in result.stdout
    assert "cloud plugin 'broken' (skyk-broken 1.2.3) failed to load" in result.stderr

    check = run_with(skyk, site, "check")
    assert check.returncode == 0
    assert "plugin failed to load" in check.stdout and "fake credentials" in check.stdout


@pytest.mark.parametrize("dist, entry, module, cloud, expected", [
    # Two entry points with one name.
    ("skyk-aws-fork", "aws", "aws_fork", "aws",
     ["two cloud plugins are named 'aws'", "skyk-aws-fork 1.2.3", "skyk-aws "]),
    # Two plugins registering one cloud name.
    ("skyk-sneaky", "sneaky", "sneaky_plugin", "gcp",
     ["two plugins provide the cloud 'gcp'", "skyk-sneaky 1.2.3", "skyk-gcp"]),
], ids=["entry-point-name", "cloud-name"])
def test_duplicate_names_fail_naming_both(skyk, site, dist, entry, module, cloud, expected):
    fake_dist(site, dist, {entry: module}, {module: CLOUD_MODULE.format(cloud=cloud)})
    result = run_with(skyk, site, "check")
    assert result.returncode != 0
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    for text in expected:
        assert text in line


def test_disabled_plugins_are_never_imported(skyk, site):
    fake_dist(site, "skyk-broken", {"broken": "broken_plugin"},
              {"broken_plugin": "raise SystemExit('imported!')\n"})
    result = run_with(skyk, site, "plugins", "-o", "json", SKYK_DISABLE_PLUGINS="broken, gcp")
    assert result.returncode == 0, result.stderr
    status = {p["name"]: p["status"] for p in json.loads(result.stdout)}
    assert status["broken"] == "disabled" and status["gcp"] == "disabled"
    assert status["aws"] == "ok"


def test_named_loading_imports_only_what_is_asked(monkeypatch):
    kernel = Kernel.load(("cloud",), ["aws"])
    assert kernel.loaded_names == ["cloud:aws"]
    assert list(kernel.clouds()) == ["aws"]


def test_builtin_plugins_use_the_same_registry():
    kernel = Kernel.load(("cloud", "policy"))
    info = {i.name: i for i in kernel.plugins}
    assert info["local"].distribution == "skyk-core" and info["local"].kind == "cloud"
    assert "request_rate" in kernel.scaling_policies()
    assert "round_robin" in kernel.load_balancing_policies()
