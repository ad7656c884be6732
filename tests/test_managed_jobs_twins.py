"""A managed spot job on the fake EC2's node twins, preempted twice by the test bed: each time it
is recovered in another region (EAGER_NEXT_REGION) and resumes from the checkpoint it keeps in an
S3 bucket mounted at a fixed path, and it ends SUCCEEDED with no cluster or twin left."""

from __future__ import annotations

import ipaddress
import json

import pytest
from lifecycle_helpers import wait_for
from testbed_helpers import assert_no_twins_left, bed_with_twins, task_file

pytestmark = pytest.mark.slow

#: the twins' bridge and subnet, this module's alone
BRIDGE, SUBNET = "skykmj0", "10.226.0.0/16"

TASK = """\
resources:
  infra: aws
  cpus: 2+
  use_spot: true
file_mounts:
  ~/ckpt:
    source: s3://ckpt
    mode: MOUNT
run: |
  n=$(cat ~/ckpt/step 2>/dev/null || echo 0)
  echo "resuming from $n in $SKYK_CLUSTER_INFO"
  while [ "$n" -lt 12 ]; do n=$((n+1)); echo $n > ~/ckpt/step; sleep 1; done
  echo "done at $n"
"""


@pytest.fixture
def bed(tmp_path, shared_catalogs):
    from fakecloud import FakeEC2
    from storage_beds import require_storage_tools

    require_storage_tools()
    with bed_with_twins(lambda twins: FakeEC2(twins=twins, catalog_dir=shared_catalogs), tmp_path,
                        bridge=BRIDGE, subnet=SUBNET) as fake:
        yield fake


@pytest.fixture
def s3(bed):
    from fakecloud import FakeS3

    # On the bridge's address, where the twins reach it; it takes the EC2 bed's key.
    with FakeS3(host=str(next(ipaddress.ip_network(SUBNET).hosts())), access_key=bed.access_key,
                secret_key=bed.secret_key) as found:
        found.client().create_bucket(Bucket="ckpt")
        yield found


def _step(s3) -> int:
    try:
        return int(s3.client().get_object(Bucket="ckpt", Key="step")["Body"].read() or 0)
    except Exception:  # noqa: BLE001 - not written yet
        return 0


def _job(cli) -> dict:
    result = cli("jobs", "queue", "-o", "json")
    assert result.returncode == 0, result.stderr
    [found] = json.loads(result.stdout)
    return found


def _running_in(cli, bed, regions_seen: list[str]) -> str:
    """Wait until the job RUNs in a region not seen before; return it."""
    def running():
        found = _job(cli)
        infra = found["infra"] or ""
        return found["status"] == "RUNNING" and infra and infra.split("/")[1] not in regions_seen and infra
    return wait_for(running, timeout=240, interval=1, what="the job RUNNING in a new region").split("/")[1]


def test_a_spot_job_preempted_twice_resumes_in_other_regions(skyk, bed, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("SKYK_JOBS_CHECK_SECONDS", "0.5")
    env = {**bed.env(), **s3.env()}

    def cli(*args):
        return skyk(*args, env=env, timeout=300)

    try:
        assert cli("jobs", "launch", task_file(tmp_path, TASK), "-d", "-n", "train").returncode == 0
        regions: list[str] = []
        for _ in range(2):
            regions.append(_running_in(cli, bed, regions))
            before = _step(s3)
            wait_for(lambda before=before: _step(s3) >= before + 2, timeout=60, interval=0.5,
                     what="the job to write a checkpoint")
            [instance] = [i for i in bed.instances() if i["state"] == "running"
                          and i["tags"].get("skyk-cluster") == "skyk-jobs-1"]
            bed.preempt(instance["id"])
            wait_for(lambda: _job(cli)["status"] == "RECOVERING", timeout=60, interval=0.5,
                     what="the job RECOVERING")
        found = wait_for(lambda: (j := _job(cli))["status"] not in ("RECOVERING", "RUNNING", "STARTING") and j,
                         timeout=300, interval=1, what="the job to end")
        assert found["status"] == "SUCCEEDED", found
        assert found["recoveries"] == 2
        output = cli("jobs", "logs", "1", "--no-follow").stdout
        resumed = [int(line.split()[2]) for line in output.splitlines() if line.startswith("resuming from")]
        assert len(resumed) == 3 and resumed[0] == 0 and 0 < resumed[1] < resumed[2], output
        assert "done at 12" in output
        table = cli("jobs", "queue").stdout
        assert "#RECOVERIES" in table and "SUCCEEDED" in table
        assert len(set(regions)) == 2
        assert [i for i in bed.instances() if i["state"] not in ("terminated", "shutting-down")] == []
    finally:
        cli("jobs", "cancel", "-a", "-y")
        wait_for(lambda: _job(cli)["status"] in ("SUCCEEDED", "CANCELLED", "FAILED", "FAILED_NO_RESOURCE"),
                 timeout=120, interval=1, what="the job to end")
    assert_no_twins_left(bed)
