"""End to end through the real CLI on the local cloud: launch, logs, exec, queue, cancel,
stop, start, down, multi-node, ports, autostop, and cleanup."""

from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from lifecycle_helpers import (
    cmdlines,
    down_everything,
    netns_available,
    node_processes,
    sandboxes,
    status_json,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(skyk, isolated_home):
    """The skyk CLI; tears every cluster down afterwards and checks nothing is left."""
    yield skyk
    down_everything(skyk, isolated_home)


def _jobs(cli, cluster: str) -> dict[int, dict]:
    result = cli("queue", cluster, "-o", "json")
    assert result.returncode == 0, result.stderr
    return {job["id"]: job for job in json.loads(result.stdout)[cluster]}


def test_full_lifecycle_through_the_cli(cli, isolated_home, tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("name: life\nsetup: echo setting-up\nrun: echo hello from rank $SKYK_NODE_RANK\n")
    launched = cli("launch", "-c", "life", str(task), "-y")
    assert launched.returncode == 0, launched.stderr
    assert "setting-up" in launched.stdout and "hello from rank 0" in launched.stdout
    assert "SUCCEEDED" in launched.stderr

    logs = cli("logs", "life", "1", "--no-follow")
    assert logs.returncode == 0 and "hello from rank 0" in logs.stdout

    again = cli("exec", "life", "echo ran-without-setup")
    assert again.returncode == 0, again.stderr
    assert "ran-without-setup" in again.stdout and "setting-up" not in again.stdout

    assert cli("exec", "life", "-d", "sleep 60").returncode == 0          # job 3
    assert cli("exec", "life", "-d", "echo after-cancel").returncode == 0  # job 4
    jobs = wait_for(lambda: (j := _jobs(cli, "life"))[3]["status"] == "RUNNING" and j, what="job 3 running")
    assert jobs[4]["status"] == "PENDING"
    assert [jobs[1]["status"], jobs[2]["status"]] == ["SUCCEEDED", "SUCCEEDED"]
    cancelled = cli("cancel", "life", "3")
    assert cancelled.returncode == 0, cancelled.stderr
    jobs = wait_for(lambda: (j := _jobs(cli, "life"))[4]["status"] == "SUCCEEDED" and j, what="job 4 done")
    assert jobs[3]["status"] == "CANCELLED"
    assert "sleep 60" not in " ".join(cmdlines(node_processes()))

    stopped = cli("stop", "life", "-y")
    assert stopped.returncode == 0, stopped.stderr
    assert [c["status"] for c in status_json(cli)] == ["STOPPED"]
    assert node_processes() == {}
    assert cli("exec", "life", "echo no").returncode != 0

    started = cli("start", "life")
    assert started.returncode == 0, started.stderr
    assert [c["status"] for c in status_json(cli)] == ["UP"]
    back = cli("exec", "life", "echo back")
    assert back.returncode == 0 and "back" in back.stdout
    assert 4 in _jobs(cli, "life"), "the job queue survives stop and start"

    down = cli("down", "life", "-y")
    assert down.returncode == 0, down.stderr
    assert status_json(cli) == []
    assert node_processes() == {}
    assert sandboxes(isolated_home) == []
    report = cli("cost-report", "-o", "json")
    assert report.returncode == 0 and json.loads(report.stdout)[0]["cluster"] == "life"
    assert json.loads(report.stdout)[0]["status"] == "TERMINATED"


def test_two_nodes_print_their_rank_and_ips(cli):
    run = ('echo "rank=$SKYK_NODE_RANK sky=$SKYPILOT_NODE_RANK nodes=$SKYK_NUM_NODES'
           ' ips=$(echo $SKYK_NODE_IPS | tr " " ,) same=$([ "$SKYK_NODE_IPS" = "$SKYPILOT_NODE_IPS" ] && echo y)'
           ' me=$SKYK_NODE_IP"')
    result = cli("launch", "-c", "pair", "--num-nodes", "2", run, "-y")
    assert result.returncode == 0, result.stderr
    [cluster] = status_json(cli)
    ips = ",".join(cluster["node_ips"])
    assert len(set(cluster["node_ips"])) == 2
    for rank, ip in enumerate(cluster["node_ips"]):
        assert f"rank={rank} sky={rank} nodes=2 ips={ips} same=y me={ip}" in result.stdout
    assert "(head, rank=0)" in result.stdout and "(worker1, rank=1)" in result.stdout


@pytest.mark.skipif(not netns_available(), reason="needs root and ip netns for per-node addresses")
def test_two_clusters_serve_port_8000_side_by_side(cli, tmp_path):
    run = 'echo "I am $SKYK_CLUSTER_NAME" > index.html && exec python3 -m http.server 8000 --bind 0.0.0.0'
    for name in ("web-a", "web-b"):
        result = cli("launch", "-c", name, "-d", run, "-y")
        assert result.returncode == 0, result.stderr
    for name in ("web-a", "web-b"):
        endpoint = cli("status", "--endpoint", "8000", name)
        assert endpoint.returncode == 0, endpoint.stderr
        address = endpoint.stdout.strip()
        assert address.endswith(":8000") and "\n" not in address

        def fetch(address=address):
            try:
                return urllib.request.urlopen(f"http://{address}/index.html", timeout=2).read().decode()
            except OSError:
                return None

        assert wait_for(fetch, what=f"{name} serving") == f"I am {name}\n"
    ip = cli("status", "--ip", "web-a").stdout.strip()
    assert ip == cli("status", "--endpoint", "8000", "web-a").stdout.strip().rsplit(":", 1)[0]


def _fetch(url: str) -> tuple[int, str] | None:
    """GET ``url``: (status, body), or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return None


@pytest.mark.skipif(not netns_available(), reason="needs root and ip netns for per-node addresses")
@pytest.mark.parametrize("task", ["example", "cwd"])
def test_what_a_task_serves_holds_no_agent_state_or_secrets(cli, isolated_home, task):
    """The shipped example, and a task serving its own working directory, never serve ~/.skyk."""
    source = (str(REPO / "examples" / "serve-http.yaml") if task == "example"
              else "exec python3 -m http.server 8080 --bind 0.0.0.0")
    secret = f"s3cret-{uuid.uuid4().hex}"
    result = cli("launch", "-c", "web", "-d", source, "--secret", f"API_TOKEN={secret}", "-y")
    assert result.returncode == 0, result.stderr
    address = cli("status", "--endpoint", "8080", "web").stdout.strip()
    assert wait_for(lambda: _fetch(f"http://{address}/"), what="the server")[0] == 200
    for path in ("/", "/.skyk/", "/.skyk/jobs/1/env.json", "/../.skyk/jobs/1/env.json",
                 "/sky_workdir/", "/.skyk/cluster.json"):
        status, body = _fetch(f"http://{address}{path}")
        assert secret not in body and ".skyk" not in body, path
        assert path == "/" or status == 404, (path, status)
    [env_file] = (isolated_home / ".skyk" / "local").glob("web-*/node0/.skyk/jobs/1/env.json")
    assert secret in env_file.read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    for directory in (env_file.parent, env_file.parent.parent, env_file.parent.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_autostop_stops_and_autodown_tears_down(cli):
    assert cli("launch", "-c", "idle-stop", "-i", "0.02", "echo hi", "-y").returncode == 0
    assert cli("launch", "-c", "idle-down", "--down", "echo hi", "-y").returncode == 0

    def statuses():
        return {c["name"]: c["status"] for c in status_json(cli)}

    wait_for(lambda: statuses() == {"idle-stop": "STOPPED"}, timeout=60, interval=0.5,
             what="autostop to stop one cluster and tear the other down")
    assert node_processes() == {}


def test_autostop_prepares_the_nodes_before_the_agent_is_told(cli, tmp_path):
    log = tmp_path / "autostop"
    env = {"FLAKY_AUTOSTOP": str(log)}
    result = cli("launch", "-c", "fs", "--cloud", "flaky", "-d", "-i", "30", "--down", "echo hi", "-y", env=env)
    assert result.returncode == 0, result.stderr
    assert cli("autostop", "fs", "-i", "60", env=env).returncode == 0
    assert log.read_text().splitlines() == ["fs down", "fs stop"]


def test_down_all_of_ten_clusters_leaves_nothing(cli, isolated_home):
    import concurrent.futures

    names = [f"many-{i}" for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda n: cli("launch", "-c", n, "-d", "sleep 300 & sleep 300", "-y"), names))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    wait_for(lambda: len(set(node_processes().values())) == 10, what="ten nodes running")
    down = cli("down", "-a", "-y")
    assert down.returncode == 0, down.stderr
    assert status_json(cli) == []
    assert node_processes() == {}
    assert sandboxes(isolated_home) == []


def test_logs_tail_autostop_command_and_cost_report(cli):
    launched = cli("launch", "-c", "tl", "for i in 1 2 3 4 5; do echo line$i; done", "-y")
    assert launched.returncode == 0, launched.stderr
    assert cli("logs", "tl", "--no-follow", "--tail", "2").stdout.split() == ["line4", "line5"]
    followed = cli("logs", "tl", "--tail", "1")  # the job is done, so following returns at once
    assert followed.returncode == 0 and followed.stdout.split() == ["line5"]

    assert cli("autostop", "tl", "-i", "30").returncode == 0
    assert status_json(cli)[0]["autostop"] == {"idle_minutes": 30, "down": False}
    assert "30m" in cli("status").stdout
    assert cli("autostop", "tl", "--cancel").returncode == 0
    assert status_json(cli)[0]["autostop"] is None
    assert cli("autostop", "tl", "-i", "0.02").returncode == 0
    wait_for(lambda: status_json(cli)[0]["status"] == "STOPPED", timeout=60, interval=0.5,
             what="autostop set by 'skyk autostop' to stop the cluster")

    report = cli("cost-report")
    assert report.returncode == 0
    assert report.stdout.splitlines()[0].split() == ["NAME", "LAUNCHED", "DURATION", "INFRA", "RESOURCES",
                                                     "$/h", "COST", "STATUS"]
    assert "tl" in report.stdout and "Total: $0.00" in report.stdout
    [row] = [line.split() for line in report.stdout.splitlines() if line.startswith("tl ")]
    assert row[-1] == "STOPPED", report.stdout  # once 'ended', as if torn down
