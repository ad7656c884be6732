"""``skyk serve`` on the fake clouds of the test bed: replicas are VMs reached over SSH,
placed by price across clouds, and replaced when their cloud takes them away.

Each cloud's fake runs with its own node twins (its own bridge); skyk is pointed at
them only through the settings a user would make (``env()`` of each fake). Needs
root, ``ip``, ``sshd`` and ``sudo``, and skyk-router.
"""

from __future__ import annotations

import pytest
from lifecycle_helpers import wait_for
from serve_helpers import needs_router, wait_serving

pytestmark = [pytest.mark.slow, needs_router]

SERVICE = """\
service:
  readiness_probe: /index.html
  replicas: {replicas}
resources:
{resources}
  ports: 8080
run: |
  echo "replica $SKYK_SERVE_REPLICA_ID" > index.html
  exec python3 -m http.server 8080 --bind 0.0.0.0
"""


@pytest.fixture
def aws_bed(tmp_path, shared_catalogs):
    """A fake EC2 whose instances are node twins (bridge skyksv0)."""
    from fakecloud import FakeEC2
    from fakecloud.twins import TwinHost, require_twin_tools

    require_twin_tools()
    with TwinHost(tmp_path / "aws-twins", bridge="skyksv0", subnet="10.222.0.0/16") as twins, \
            FakeEC2(twins=twins, catalog_dir=shared_catalogs) as ec2:
        yield ec2
        assert not ec2.errors, ec2.errors


def _service(skyk, env: dict, tmp_path, name: str, replicas: int, resources: str):
    task = tmp_path / f"{name}.yaml"
    task.write_text(SERVICE.format(replicas=replicas, resources=resources))
    up = skyk("serve", "up", "-n", name, str(task), "-y", env=env, timeout=180)
    assert up.returncode == 0, up.stderr
    return up.stdout.strip()


def _replicas(skyk, env: dict, name: str) -> list[dict]:
    result = skyk("serve", "status", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    [service] = [s for s in __import__("json").loads(result.stdout) if s["name"] == name]
    return service["replicas"]


def _ready(skyk, env, name: str, count: int) -> list[dict] | None:
    ready = [r for r in _replicas(skyk, env, name) if r["status"] == "READY"]
    return ready if len(ready) == count else None


def test_a_preempted_spot_replica_on_aws_is_replaced(skyk, aws_bed, tmp_path):
    env = aws_bed.env()
    try:
        endpoint = _service(skyk, env, tmp_path, "spotty", 2, "  infra: aws/us-east-1\n  cpus: 2+\n"
                            "  use_spot: true")
        first = wait_for(lambda: _ready(skyk, env, "spotty", 2), timeout=240, interval=1,
                         what="2 READY replicas on AWS")
        assert {r["cloud"] for r in first} == {"aws"} and all(r["spot"] for r in first)
        wait_serving(endpoint, {"replica 1", "replica 2"}, "/index.html")
        victim = next(r for r in first if r["id"] == 1)
        [instance] = [i for i in aws_bed.instances() if i["state"] == "running"
                      and i["tags"].get("skyk-cluster") == victim["cluster"]]
        aws_bed.preempt(instance["id"])

        def replaced() -> list[dict] | None:
            replicas = _replicas(skyk, env, "spotty")
            preempted = [r["id"] for r in replicas if r["status"] == "PREEMPTED"]
            ready = [r["id"] for r in replicas if r["status"] == "READY"]
            return replicas if preempted == [1] and sorted(ready) == [2, 3] else None

        wait_for(replaced, timeout=240, interval=1, what="replica 1 seen PREEMPTED and replaced by 3")
        wait_serving(endpoint, {"replica 2", "replica 3"}, "/index.html")
    finally:
        down = skyk("serve", "down", "-a", "-y", env=env, timeout=300)
        assert down.returncode == 0, down.stderr
    assert [i for i in aws_bed.instances() if i["state"] != "terminated"] == []
    assert aws_bed.twins.twins() == []
