"""The cache of parsed catalogs: read back as parsed, never stale, safe when damaged or shared."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from skyk.catalog import cache
from skyk.catalog.csvfile import read_offerings
from skyk.catalog.store import Catalog
from skyk.errors import CatalogError

HEADER = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region\n"
ROWS = ("m1,,,2,8,0.10,0.03,r1\n"
        "m2,,,4,16,0.20,0.06,r1\n"
        "g1,A100,8,96,1152,30.0,10.0,r1\n"
        "g2,T4,1,4,16,0.50,,r2\n")


class Source:
    """A cloud plugin's catalog as the cache sees it, counting how often it is parsed."""

    def __init__(self, directory: Path, code: Path):
        self.cloud = "toy"
        self.directory = directory
        self.code = code
        self.parses = 0

    def files(self):
        return ["toy/vms.csv"]

    def code_files(self):
        return [self.code]

    def read(self, catalog_dir):
        self.parses += 1
        return read_offerings(catalog_dir / "toy" / "vms.csv", "toy")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own, not the run's shared one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def source(tmp_path):
    catalog = tmp_path / "catalogs"
    (catalog / "toy").mkdir(parents=True)
    (catalog / "toy" / "vms.csv").write_text(HEADER + ROWS)
    code = tmp_path / "plugin.py"
    code.write_text("# the plugin\n")
    return Source(catalog, code)


def load(source):
    return cache.read_cached(source, source.directory)


def cached_files():
    return sorted(p.name for p in cache.cache_dir().glob("*"))


def test_a_second_command_reads_the_cache_and_gets_what_was_parsed(source):
    first = load(source).all()
    second = load(source)
    assert source.parses == 1
    assert second.all() == first
    assert {o.instance_type for o in first} == {"m1", "m2", "g1", "g2"}
    assert second.with_accelerator("T4")[0].spot_price is None


def test_a_request_builds_only_the_groups_it_uses(source):
    load(source)
    cached = load(source)
    assert cached.accelerators() == {None, "A100", "T4"}
    assert [o.instance_type for o in cached.with_accelerator("A100")] == ["g1"]
    # The CPU-only group is still encoded: nothing asked for it.
    assert set(cached._pending) == {None, "T4"}


def test_a_changed_catalog_file_is_parsed_again(source):
    load(source)
    csv = source.directory / "toy" / "vms.csv"
    # Same size, other price: only the modification time tells them apart.
    csv.write_text(HEADER + ROWS.replace("0.10", "0.11"))
    stat = csv.stat()
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    prices = {o.instance_type: o.price for o in load(source).all()}
    assert source.parses == 2
    assert prices["m1"] == 0.11
    # The older key's file is gone: one file per cloud and catalog directory.
    assert len(cached_files()) == 1


def test_a_changed_plugin_is_asked_again(source):
    load(source)
    source.code.write_text("# the plugin, now reading another column\n")
    load(source)
    assert source.parses == 2


def test_another_catalog_directory_has_a_cache_of_its_own(source, tmp_path):
    load(source)
    other = Source(tmp_path / "other", source.code)
    (other.directory / "toy").mkdir(parents=True)
    (other.directory / "toy" / "vms.csv").write_text(HEADER + "m9,,,1,1,0.01,,r9\n")
    assert [o.instance_type for o in load(other).all()] == ["m9"]
    load(source)
    load(other)
    assert (source.parses, other.parses) == (1, 1)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage"])
def test_a_damaged_cache_file_is_parsed_again_and_mended(source, damage):
    parsed = load(source).all()
    [path] = cache.cache_dir().glob("toy-*.bin")
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:len(data) - 20]
    elif damage == "flipped":
        data[-5] ^= 0xFF  # inside the last group, past the header
    else:
        data = bytearray(b"not a cache file at all")
    path.write_bytes(bytes(data))
    again = load(source)
    assert sorted(again.all()) == sorted(parsed)
    assert source.parses == 2
    # Mended: the next command reads it whole again.
    assert sorted(load(source).all()) == sorted(parsed)
    assert source.parses == 2


def test_a_cache_that_cannot_be_written_only_costs_speed(source, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert len(load(source).all()) == 4
    assert len(load(source).all()) == 4
    assert source.parses == 2


def test_a_missing_catalog_file_is_the_plugins_to_report(source):
    (source.directory / "toy" / "vms.csv").unlink()
    with pytest.raises(CatalogError, match="not found"):
        load(source)
    assert cached_files() == []


def test_commands_filling_the_cache_at_once_all_read_the_same_offerings(tmp_path, shared_catalogs):
    """Four processes start with an empty cache and load the real catalogs together."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "SKYK_CATALOG_DIR": str(shared_catalogs)}
    env.pop("SKYK_DISABLE_PLUGINS", None)
    script = textwrap.dedent("""
        from skyk.catalog.store import Catalog
        from skyk.plugins.manager import Kernel
        catalog = Catalog.load(Kernel.load(("cloud",), ["aws", "gcp", "azure"]))
        assert not catalog.errors, catalog.errors
        print(len(catalog.all()), sum(o.price or 0 for o in catalog.with_accelerator("A100")))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1
    # What they left is whole files only, one per cloud, no temporary file.
    left = sorted(p.name for p in (tmp_path / "cache" / "skyk" / "catalogs").iterdir())
    assert [name.split("-")[0] for name in left] == ["aws", "azure", "gcp"]
    # And a later command reads them, with the same offerings.
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.stdout == outputs[0][0]


def test_the_kernel_reads_catalogs_through_the_cache(shared_catalogs, monkeypatch):
    monkeypatch.delenv("SKYK_DISABLE_PLUGINS", raising=False)
    from skyk.plugins.manager import Kernel

    kernel = Kernel.load(("cloud",), ["aws"])
    parsed, errors = kernel.offerings_by_cloud(shared_catalogs)
    assert not errors
    for _ in range(2):
        catalog = Catalog.load(kernel, shared_catalogs)
        assert sorted(catalog.of_cloud("aws")) == sorted(parsed["aws"])
    assert [name.split("-")[0] for name in cached_files()] == ["aws"]
