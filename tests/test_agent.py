"""The node agent, driven the way the CLI drives it: AgentClient over LocalRunner sandboxes.

Every test gets its own node homes and node markers; teardown shuts the
agent down and then kills any process still carrying a marker, so a failing
test leaves nothing running.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from skyk.agent.client import AgentClient, AgentError, UnknownJobError
from skyk.agent.runners import NODE_MARKER, LocalRunner

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="the agent tests inspect /proc")

TERMINAL = {"SUCCEEDED", "FAILED", "FAILED_SETUP", "CANCELLED"}


# --- helpers -------------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def marker_pids(marker: str) -> list[int]:
    """Return the live processes whose environment carries node marker ``marker``."""
    needle = f"{NODE_MARKER}={marker}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if needle in Path(entry.path, "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def read_pid(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), what=str(path)))


class Cluster:
    """A fake cluster of LocalRunner nodes with the agent installed and started on the head."""

    def __init__(self, root: Path, nodes: int = 1, autostop: dict | None = None):
        tag = uuid.uuid4().hex[:8]
        self.homes = [root / f"node{rank}" for rank in range(nodes)]
        self.markers = [f"test-agent-{tag}-{rank}" for rank in range(nodes)]
        for home in self.homes:
            home.mkdir(parents=True)
        self.runners = [LocalRunner(home=str(h), marker=m, netns=None)
                        for h, m in zip(self.homes, self.markers, strict=True)]
        self.client = AgentClient(self.runners[0], timeout=60)
        self.info = {
            "cluster": "test-cluster", "cloud": "local", "region": "local", "zone": None,
            "instance_type": "local", "num_nodes": nodes, "num_gpus_per_node": 0,
            "node_ips": [f"10.0.0.{rank + 1}" for rank in range(nodes)],
            "runners": [r.spec() for r in self.runners],
            "autostop": autostop or {"stop": None, "down": None},
        }

    @property
    def head(self) -> Path:
        return self.homes[0]

    def up(self) -> Cluster:
        self.client.install()
        self.client.write_cluster_info(self.info)
        self.client.start()
        return self

    def wait(self, job_id: int, statuses=TERMINAL, timeout: float = 10.0) -> dict:
        """Wait for job ``job_id`` to reach one of ``statuses``; return it."""
        return wait_for(lambda: (j := self.client.job(job_id))["status"] in statuses and j,
                        timeout, f"job {job_id} to become {'/'.join(sorted(statuses))}")

    def log(self, job_id: int, *args: str) -> str:
        proc = self.client.logs(job_id, follow="--follow" in args,
                                tail=int(args[args.index("--tail") + 1]) if "--tail" in args else None)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        return out.decode()

    def agent(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run an agent command on the head directly (to see exit codes and stderr)."""
        return self.runners[0].run(
            f"PYTHONPATH=$HOME/.skyk/agent {sys.executable} -m skyk_agent {' '.join(args)}", input=input)

    def teardown(self) -> None:
        try:
            self.client.shutdown()
        except Exception:
            pass
        for marker in self.markers:
            for pid in marker_pids(marker):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def make_cluster(tmp_path):
    made: list[Cluster] = []

    def make(nodes: int = 1, autostop: dict | None = None, start: bool = True) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(made)}", nodes, autostop)
        made.append(cluster)
        return cluster.up() if start else cluster

    yield make
    for cluster in made:
        cluster.teardown()


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    return make_cluster()


def read_until(stream, needle: bytes, timeout: float = 10.0) -> bytes:
    """Read ``stream`` (a pipe) until ``needle`` has arrived; fail after ``timeout`` seconds."""
    fd, data = stream.fileno(), b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"{needle!r} did not arrive; got {data!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            pytest.fail(f"stream ended before {needle!r}; got {data!r}")
        data += chunk
    return data


# --- the daemon ----------------------------------------------------------------------------------

def test_install_and_start_are_idempotent(make_cluster):
    cluster = make_cluster(start=False)
    assert cluster.client.health() is None  # nothing installed yet
    cluster.client.install()
    cluster.client.install()
    assert (cluster.head / ".skyk/agent/skyk_agent/__main__.py").is_file()
    assert not (cluster.head / ".skyk/agent/skyk_agent/__pycache__").exists()
    cluster.client.write_cluster_info(cluster.info)
    first = cluster.client.start()
    second = cluster.client.start()
    assert first["started"] is True and second == {"pid": first["pid"], "started": False}
    health = cluster.client.health()
    assert health["alive"] is True and health["pid"] == first["pid"]
    assert health["running"] == 0 and health["pending"] == 0
    assert json.loads((cluster.head / ".skyk/cluster.json").read_text()) == cluster.info


def test_concurrent_starts_make_one_daemon(make_cluster):
    cluster = make_cluster(start=False)
    cluster.client.install()
    cluster.client.write_cluster_info(cluster.info)
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(cluster.client.start())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(a["started"] for a in answers) == 1
    assert len({a["pid"] for a in answers}) == 1


# --- jobs ----------------------------------------------------------------------------------------

def test_job_succeeds_and_its_output_is_logged(cluster):
    (cluster.head / "sky_workdir").mkdir()
    job_id = cluster.client.submit({
        "name": "hello", "setup": "echo preparing", "envs": {"GREETING": "hello", "SKYK_NODE_RANK": "9"},
        "secrets": {}, "run": 'echo "$GREETING from $(pwd) rank=$SKYK_NODE_RANK"; echo oops >&2'})
    assert job_id == 1
    job = cluster.wait(job_id)
    assert (job["status"], job["exit_code"], job["name"]) == ("SUCCEEDED", 0, "hello")
    assert job["submitted_at"] <= job["started_at"] <= job["ended_at"]
    workdir = cluster.head / "sky_workdir"
    # User envs override none of the agent's variables.
    assert cluster.log(job_id) == f"preparing\nhello from {workdir} rank=0\noops\n"
    assert cluster.client.queue() == [job]


def test_job_env_names_the_task(cluster):
    job_id = cluster.client.submit({"name": None, "setup": None, "envs": {}, "secrets": {},
                                    "run": "echo $SKYK_TASK_ID; echo $SKYPILOT_TASK_ID; echo $SKYK_JOB_ID;"
                                           " echo $SKYK_CLUSTER_NAME; echo $SKYK_NUM_GPUS_PER_NODE; pwd"})
    assert cluster.wait(job_id)["status"] == "SUCCEEDED"
    task, sky_task, job, name, gpus, cwd = cluster.log(job_id).splitlines()
    assert task == sky_task and task.startswith("skyk-") and task.endswith("_test-cluster_1")
    # The workdir, made when the task has none: never the home, which holds ~/.skyk.
    assert (job, name, gpus, cwd) == ("1", "test-cluster", "0", str(cluster.head / "sky_workdir"))


def test_failing_run_fails_the_job_with_its_exit_code(cluster):
    job_id = cluster.client.submit({"run": "echo before; exit 7"})
    job = cluster.wait(job_id)
    assert (job["status"], job["exit_code"]) == ("FAILED", 7)
    assert cluster.log(job_id) == "before\n"


def test_failing_setup_skips_run(cluster):
    job_id = cluster.client.submit({"setup": "echo setting up; exit 3", "run": "echo never"})
    job = cluster.wait(job_id)
    assert (job["status"], job["exit_code"]) == ("FAILED_SETUP", 3)
    assert cluster.log(job_id) == "setting up\n"


def test_setup_only_job_succeeds(cluster):
    job_id = cluster.client.submit({"setup": "echo only setup", "run": None})
    assert cluster.wait(job_id)["status"] == "SUCCEEDED"
    assert cluster.log(job_id) == "only setup\n"


def test_jobs_run_one_at_a_time_in_order(cluster):
    gate = cluster.head / "go"
    first = cluster.client.submit({"name": "first", "run": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    second = cluster.client.submit({"name": "second", "run": "echo second"})
    cluster.wait(first, {"RUNNING"})
    assert cluster.client.job(second)["status"] == "PENDING"
    health = cluster.client.health()
    assert (health["running"], health["pending"], health["idle_seconds"]) == (1, 1, 0)
    assert [j["id"] for j in cluster.client.queue()] == [second, first]
    gate.touch()
    done = cluster.wait(second)
    assert done["status"] == "SUCCEEDED"
    assert done["started_at"] >= cluster.client.job(first)["ended_at"]


def test_jobs_share_the_nodes_accelerators_while_their_counts_fit(make_cluster):
    cluster = make_cluster(start=False)
    cluster.info["num_gpus_per_node"] = 1
    cluster.up()
    gate = cluster.head / "go"
    wait = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    halves = [cluster.client.submit({"run": wait, "gpus": 0.5}) for _ in range(2)]
    whole = cluster.client.submit({"run": "echo whole", "gpus": 1})
    unsized = cluster.client.submit({"run": "echo unsized"})
    for job_id in halves:
        cluster.wait(job_id, {"RUNNING"})
    # In order: the whole-GPU job waits for the halves, and the job that names no
    # accelerators (the whole node) waits behind it.
    assert [cluster.client.job(j)["status"] for j in (whole, unsized)] == ["PENDING", "PENDING"]
    gate.touch()
    assert [cluster.wait(j)["status"] for j in (*halves, whole, unsized)] == ["SUCCEEDED"] * 4
    assert cluster.client.job(unsized)["started_at"] >= cluster.client.job(whole)["ended_at"]


def test_a_job_asking_more_than_the_node_has_runs_alone(cluster):
    # This node has no GPU: a job asking for some still runs (it must not wait forever), but alone.
    gate = cluster.head / "go"
    first = cluster.client.submit({"run": f"while [ ! -e {gate} ]; do sleep 0.02; done", "gpus": 0.5})
    second = cluster.client.submit({"run": "echo second", "gpus": 0.5})
    cluster.wait(first, {"RUNNING"})
    assert cluster.client.job(second)["status"] == "PENDING"
    gate.touch()
    assert cluster.wait(second)["status"] == "SUCCEEDED"


def test_concurrent_submits_get_distinct_ids(cluster):
    ids: list[int] = []
    threads = [threading.Thread(target=lambda i=i: ids.append(cluster.client.submit({"run": f"echo {i}"})))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 7))
    for job_id in ids:
        assert cluster.wait(job_id)["status"] == "SUCCEEDED"


def test_bad_submissions_are_refused(cluster):
    result = cluster.agent("submit", input="not json")
    assert result.returncode == 1 and "not JSON" in result.stderr
    with pytest.raises(AgentError, match="not a valid environment variable name"):
        cluster.client.submit({"run": "true", "envs": {"A B": "1"}})
    with pytest.raises(AgentError, match="gpus must be a positive number"):
        cluster.client.submit({"run": "true", "gpus": -1})
    assert cluster.client.queue() == []


def test_unknown_job(cluster):
    result = cluster.agent("job", "42")
    assert (result.returncode, result.stderr.strip()) == (3, "no job 42 on this cluster")
    with pytest.raises(UnknownJobError, match="no job 42 on this cluster"):
        cluster.client.job(42)
    with pytest.raises(UnknownJobError):
        cluster.client.cancel([42])
    proc = cluster.client.logs(42)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 3 and b"no job 42" in err


# --- cancel --------------------------------------------------------------------------------------

def test_cancel_kills_a_running_job(cluster):
    pid_file = cluster.head / "sleep.pid"
    running = cluster.client.submit({"run": f"sleep 300 & echo $! > {pid_file}; wait"})
    pending = cluster.client.submit({"run": "echo never"})
    pid = read_pid(pid_file)
    assert alive(pid)
    assert cluster.client.cancel([pending]) == [pending]
    assert cluster.client.cancel([running]) == [running]
    assert not alive(pid)
    job = cluster.client.job(running)
    assert (job["status"], job["exit_code"]) == ("CANCELLED", None) and job["ended_at"]
    assert cluster.client.job(pending)["status"] == "CANCELLED"
    assert "never" not in cluster.log(pending)
    # Cancelling ended jobs changes nothing, and the queue goes on.
    assert cluster.client.cancel(None) == []
    assert cluster.client.cancel([running]) == []
    third = cluster.client.submit({"run": "echo next"})
    assert cluster.wait(third)["status"] == "SUCCEEDED"


# --- logs ----------------------------------------------------------------------------------------

def test_logs_follow_streams_and_ends(cluster):
    gate = cluster.head / "go"
    job_id = cluster.client.submit({"run": f"echo one; while [ ! -e {gate} ]; do sleep 0.02; done; echo two"})
    proc = cluster.client.logs(job_id, follow=True)
    try:
        assert read_until(proc.stdout, b"one\n") == b"one\n"  # before the job has ended
        gate.touch()
        rest, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert rest == b"two\n" and proc.returncode == 0, err
    assert cluster.client.job(job_id)["status"] == "SUCCEEDED"


def test_logs_follow_waits_for_a_pending_job(cluster):
    gate = cluster.head / "go"
    blocker = cluster.client.submit({"run": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    job_id = cluster.client.submit({"run": "echo finally"})
    cluster.wait(blocker, {"RUNNING"})
    assert cluster.log(job_id) == ""  # no log yet, and no waiting without --follow
    proc = cluster.client.logs(job_id, follow=True)
    gate.touch()
    out, err = proc.communicate(timeout=10)
    assert (out, proc.returncode) == (b"finally\n", 0), err


def test_logs_tail(cluster):
    job_id = cluster.client.submit({"run": "seq 1 10; printf partial"})
    cluster.wait(job_id)
    assert cluster.log(job_id, "--tail", "3") == "9\n10\npartial"
    assert cluster.log(job_id, "--tail", "0") == ""
    assert cluster.log(job_id, "--tail", "100").startswith("1\n2\n")
    assert cluster.log(job_id, "--follow", "--tail", "1") == "partial"


# --- several nodes -------------------------------------------------------------------------------

def test_two_nodes_run_every_phase_on_every_node(make_cluster):
    cluster = make_cluster(nodes=2)
    script = ('echo "rank=$SKYK_NODE_RANK sky=$SKYPILOT_NODE_RANK n=$SKYK_NUM_NODES/$SKYPILOT_NUM_NODES'
              ' ips=$(echo "$SKYK_NODE_IPS" | paste -sd,) sky_ips=$(echo "$SKYPILOT_NODE_IPS" | paste -sd,)"')
    job_id = cluster.client.submit({
        "setup": "echo set up > $HOME/setup-done; echo setup $SKYK_NODE_RANK",
        "run": script + '; echo "$SKYPILOT_CLUSTER_INFO" > $HOME/info.json; echo "$MSG"',
        "envs": {"MSG": "hi"}})
    assert cluster.wait(job_id)["status"] == "SUCCEEDED"
    lines = cluster.log(job_id).splitlines()
    assert sorted(lines) == sorted([
        "(head, rank=0) setup 0", "(worker1, rank=1) setup 1",
        "(head, rank=0) rank=0 sky=0 n=2/2 ips=10.0.0.1,10.0.0.2 sky_ips=10.0.0.1,10.0.0.2",
        "(worker1, rank=1) rank=1 sky=1 n=2/2 ips=10.0.0.1,10.0.0.2 sky_ips=10.0.0.1,10.0.0.2",
        "(head, rank=0) hi", "(worker1, rank=1) hi"])
    # Every setup line comes before every run line.
    assert all(line.split(") ", 1)[1].startswith("setup") for line in lines[:2])
    for home in cluster.homes:
        assert (home / "setup-done").read_text() == "set up\n"
        info = json.loads((home / "info.json").read_text())
        assert info["cluster_name"] == "test-cluster" and info["node_ips"] == ["10.0.0.1", "10.0.0.2"]
    # The worker's copy of the job's secrets file is private too.
    worker_env = cluster.homes[1] / f".skyk/jobs/{job_id}/env.json"
    assert stat.S_IMODE(worker_env.stat().st_mode) == 0o600


def test_a_failing_node_fails_the_job_and_stops_the_others(make_cluster):
    cluster = make_cluster(nodes=2)
    pid_file = cluster.head / "sleep.pid"
    job_id = cluster.client.submit({"run": (
        f'if [ "$SKYK_NODE_RANK" = 1 ]; then while [ ! -s {pid_file} ]; do sleep 0.02; done; '
        f'echo giving up; exit 5; fi; sleep 300 & echo $! > {pid_file}; wait')})
    job = cluster.wait(job_id)
    assert (job["status"], job["exit_code"]) == ("FAILED", 5)
    assert not alive(read_pid(pid_file))
    assert "(worker1, rank=1) giving up\n" in cluster.log(job_id)


def test_cancel_stops_every_node(make_cluster):
    cluster = make_cluster(nodes=2)
    job_id = cluster.client.submit({"run": "sleep 300 & echo $! > $HOME/sleep.pid; wait"})
    pids = [read_pid(home / "sleep.pid") for home in cluster.homes]
    assert cluster.client.cancel([job_id]) == [job_id]
    assert not any(alive(pid) for pid in pids)


# --- secrets -------------------------------------------------------------------------------------

def test_secrets_never_reach_a_command_line(make_cluster):
    cluster = make_cluster(nodes=2)
    secret = f"s3cret-{uuid.uuid4().hex}"
    job_id = cluster.client.submit({
        "run": f'[ "$API_TOKEN" = {secret[:6]}-"$SUFFIX" ] && echo token ok; '
               "sleep 300 & echo $! > $HOME/sleep.pid; wait",
        "envs": {"SUFFIX": secret[7:]}, "secrets": {"API_TOKEN": secret}})
    for home in cluster.homes:
        read_pid(home / "sleep.pid")
    leaks = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if secret.encode() in Path(entry.path, "cmdline").read_bytes():
                    leaks.append(entry.name)
            except OSError:
                pass
    assert leaks == []
    assert cluster.log(job_id).count("token ok") == 2
    for home in cluster.homes:  # the head and the worker it was copied to
        env_file = home / f".skyk/jobs/{job_id}/env.json"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        for directory in (env_file.parent, env_file.parent.parent, env_file.parent.parent.parent):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    cluster.client.cancel([job_id])


# --- autostop ------------------------------------------------------------------------------------

def test_autostop_runs_the_stop_command_once(make_cluster, tmp_path):
    cluster = make_cluster(autostop={"stop": 'echo "${SKYK_NODE_ID:-unmarked}" >> "$HOME/stopped"',
                                     "down": None})
    stopped = cluster.head / "stopped"
    assert cluster.client.autostop(0.02, down=False) == {"idle_minutes": 0.02, "down": False}
    assert cluster.client.health()["autostop"] == {"idle_minutes": 0.02, "down": False}
    wait_for(stopped.exists, timeout=15, what="the autostop command")
    time.sleep(1.5)  # more than a daemon tick: a second firing would show by now
    assert stopped.read_text() == "unmarked\n"
    assert "autostop" in (cluster.head / ".skyk/autostop.log").read_text()
    assert cluster.client.autostop(None) == {"idle_minutes": None, "down": False}


def test_autostop_waits_for_jobs_and_reports_unsupported(make_cluster):
    cluster = make_cluster()  # this cloud cannot stop itself: both commands are null
    gate = cluster.head / "go"
    job_id = cluster.client.submit({"run": f"while [ ! -e {gate} ]; do sleep 0.02; done"})
    cluster.wait(job_id, {"RUNNING"})
    assert cluster.client.autostop(0.0, down=True) == {"idle_minutes": 0.0, "down": True}
    assert cluster.client.health()["idle_seconds"] == 0
    gate.touch()
    cluster.wait(job_id)
    agent_log = cluster.head / ".skyk/agent.log"
    wait_for(lambda: "unsupported" in agent_log.read_text(), timeout=10, what="the autostop message")


# --- restarts and shutdown -----------------------------------------------------------------------

def test_a_restarted_daemon_fails_jobs_left_running(cluster):
    pid_file = cluster.head / "sleep.pid"
    job_id = cluster.client.submit({"run": f"sleep 300 & echo $! > {pid_file}; wait"})
    pid = read_pid(pid_file)
    daemon = cluster.client.health()["pid"]
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not cluster.client.health()["alive"], what="the daemon to die")
    assert cluster.client.start()["started"] is True
    job = cluster.client.job(job_id)
    assert (job["status"], job["exit_code"]) == ("FAILED", None)
    assert not alive(pid)  # what the old daemon left running is stopped too
    after = cluster.client.submit({"run": "echo again"})
    assert cluster.wait(after)["status"] == "SUCCEEDED"


def test_shutdown_leaves_no_process_behind(make_cluster):
    cluster = make_cluster(nodes=2)
    running = cluster.client.submit({"run": "sleep 300 & echo $! > $HOME/sleep.pid; wait"})
    pending = cluster.client.submit({"run": "echo never"})
    for home in cluster.homes:
        read_pid(home / "sleep.pid")
    cluster.client.shutdown()
    for marker in cluster.markers:
        assert marker_pids(marker) == []
    assert cluster.client.health()["alive"] is False
    assert {j["id"]: j["status"] for j in cluster.client.queue()} == {running: "CANCELLED",
                                                                       pending: "CANCELLED"}
    cluster.client.shutdown()  # again: nothing to do


def test_runs_as_the_installed_package(tmp_path):
    """``python -m skyk.agent`` works as well as the shipped ``skyk_agent``."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "skyk.agent", "queue"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"jobs": []}
