"""``skyk catalog refresh``: fetch from a directory or URL, atomically, keeping user edits."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

AWS_CSV = ("InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,"
           "Region,AvailabilityZone,Arch\n"
           "p4d.24xlarge,A100,8.0,96.0,1152.0,,20.0,3.0,us-east-1,use1-az1,x86_64\n")


@pytest.fixture
def source(tmp_path) -> Path:
    root = tmp_path / "source"
    (root / "aws").mkdir(parents=True)
    (root / "aws" / "vms.csv").write_text(AWS_CSV)
    (root / "aws" / "images.csv").write_text("Tag,Region,OS,OSVersion,ImageId,CreationDate\n"
                                             "skypilot:gpu-ubuntu-2204,us-east-1,ubuntu,22.04,ami-0123,20240101\n")
    return root


@pytest.fixture
def http_source(source):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def refresh(skyk, catalogs, *args):
    return skyk("catalog", "refresh", "--cloud", "aws", *args,
                env={"SKYK_CATALOG_DIR": str(catalogs)})


def test_refresh_from_a_directory_then_dry_run(skyk, source, tmp_path):
    catalogs = tmp_path / "catalogs"
    result = refresh(skyk, catalogs, "--source", str(source))
    assert result.returncode == 0, result.stderr
    assert (catalogs / "aws" / "vms.csv").read_text() == AWS_CSV
    assert "updated" in result.stdout
    assert not list(catalogs.rglob("*.tmp")), "temporary files left behind"
    task = tmp_path / "task.yaml"
    task.write_text("resources:\n  infra: aws\n  accelerators: A100:8\n")
    plan = skyk("launch", "--dryrun", str(task), env={"SKYK_CATALOG_DIR": str(catalogs)})
    assert plan.returncode == 0 and "p4d.24xlarge" in plan.stdout and "20.00" in plan.stdout
    again = refresh(skyk, catalogs, "--source", str(source))
    assert "unchanged" in again.stdout


def test_refresh_over_http(skyk, http_source, tmp_path):
    catalogs = tmp_path / "catalogs"
    result = refresh(skyk, catalogs, "--source", http_source)
    assert result.returncode == 0, result.stderr
    assert (catalogs / "aws" / "vms.csv").read_text() == AWS_CSV


def test_source_from_environment(skyk, source, tmp_path):
    catalogs = tmp_path / "catalogs"
    result = skyk("catalog", "refresh", "--cloud", "aws",
                  env={"SKYK_CATALOG_DIR": str(catalogs), "SKYK_CATALOG_SOURCE": str(source)})
    assert result.returncode == 0, result.stderr
    assert (catalogs / "aws" / "vms.csv").exists()


def test_user_edits_are_kept_unless_forced(skyk, source, tmp_path):
    catalogs = tmp_path / "catalogs"
    assert refresh(skyk, catalogs, "--source", str(source)).returncode == 0
    edited = catalogs / "aws" / "vms.csv"
    edited.write_text(AWS_CSV.replace("20.0", "1.0"))
    (source / "aws" / "vms.csv").write_text(AWS_CSV.replace("20.0", "21.0"))
    result = refresh(skyk, catalogs, "--source", str(source))
    assert result.returncode == 0 and "kept-user-edit" in result.stdout
    assert "1.0" in edited.read_text()
    forced = refresh(skyk, catalogs, "--source", str(source), "--force")
    assert forced.returncode == 0 and "21.0" in edited.read_text()


def test_files_skyk_did_not_write_are_the_users(skyk, source, tmp_path):
    catalogs = tmp_path / "catalogs"
    (catalogs / "aws").mkdir(parents=True)
    (catalogs / "aws" / "vms.csv").write_text("mine\n")
    result = refresh(skyk, catalogs, "--source", str(source))
    assert "kept-user-edit" in result.stdout
    assert (catalogs / "aws" / "vms.csv").read_text() == "mine\n"


def test_failed_fetch_keeps_old_files_and_exits_non_zero(skyk, source, http_source, tmp_path):
    catalogs = tmp_path / "catalogs"
    assert refresh(skyk, catalogs, "--source", str(source)).returncode == 0
    (source / "aws" / "vms.csv").unlink()
    result = refresh(skyk, catalogs, "--source", http_source)
    assert result.returncode != 0
    assert "HTTP 404" in result.stdout
    line = result.stderr.strip()
    assert "\n" not in line and "could not be refreshed" in line and "Traceback" not in line
    assert (catalogs / "aws" / "vms.csv").read_text() == AWS_CSV


def test_dead_source_url(skyk, tmp_path):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = refresh(skyk, tmp_path / "catalogs", "--source", f"http://127.0.0.1:{port}")
    assert result.returncode != 0 and "ConnectionError" in result.stdout


@pytest.mark.parametrize("broken", [
    b"InstanceType,Price\nbroken-download,1\n",  # 38 bytes: a CSV, but not a vms.csv
    AWS_CSV.split("\n", 1)[0].encode() + b"\n",  # the header and no rows
    AWS_CSV.encode()[:-30],  # cut off mid-row
    b"\xff\xfe not text",
])
def test_force_never_swaps_in_a_malformed_catalog(skyk, source, tmp_path, broken):
    catalogs = tmp_path / "catalogs"
    assert refresh(skyk, catalogs, "--source", str(source)).returncode == 0
    (source / "aws" / "vms.csv").write_bytes(broken)
    result = refresh(skyk, catalogs, "--source", str(source), "--force")
    assert result.returncode != 0
    assert "not a usable CSV catalog" in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert (catalogs / "aws" / "vms.csv").read_text() == AWS_CSV


def test_refresh_keeps_the_catalog_files_mode(skyk, source, tmp_path):
    catalogs = tmp_path / "catalogs"
    assert refresh(skyk, catalogs, "--source", str(source)).returncode == 0
    target = catalogs / "aws" / "vms.csv"
    target.chmod(0o640)
    (source / "aws" / "vms.csv").write_text(AWS_CSV.replace("20.0", "22.0"))
    result = refresh(skyk, catalogs, "--source", str(source), "--force")
    assert result.returncode == 0, result.stderr
    assert "22.0" in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o640


def test_an_empty_source_is_an_error_not_the_internet(skyk, tmp_path):
    # A blocked internet would hide a fall-back; an unreachable default makes it visible.
    result = skyk("catalog", "refresh", "--cloud", "aws", "--source", "",
                  env={"SKYK_CATALOG_DIR": str(tmp_path / "catalogs"),
                       "SKYK_CATALOG_SOURCE": "http://127.0.0.1:9/unreachable"})
    assert result.returncode == 2
    assert "--source is empty" in result.stderr and "127.0.0.1:9" not in result.stdout
    assert not (tmp_path / "catalogs").exists()
