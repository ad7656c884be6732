"""Managed jobs through the real CLI on the local cloud: ``skyk jobs launch/queue/logs/cancel``,
their states, restarts on errors, recovery when a node dies, a killed controller, pipelines."""

from __future__ import annotations

import json
import os
import signal

import pytest
from lifecycle_helpers import kill_until_gone, node_processes, sandboxes, status_json, wait_for

#: the controller checks jobs often, and gives up on a silent node quickly, so the tests are short
FAST = {"SKYK_JOBS_CHECK_SECONDS": "0.3", "SKYK_JOBS_UNREACHABLE_SECONDS": "3",
        "SKYK_JOBS_RETRY_SECONDS": "1"}


@pytest.fixture
def jobs(skyk, isolated_home, monkeypatch):
    """The CLI with fast controller settings; afterwards no job is unfinished and nothing is left."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    yield skyk
    skyk("jobs", "cancel", "-a", "-y")
    wait_for(lambda: not [j for j in queue(skyk) if j["status"] not in TERMINAL], timeout=60,
             what="every job to finish")
    assert node_processes() == {}, "node processes left behind"
    assert sandboxes(isolated_home) == [], "sandbox directories left behind"
    _stop_controller(isolated_home)


TERMINAL = {"SUCCEEDED", "CANCELLED", "FAILED", "FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE",
            "FAILED_CONTROLLER"}


def queue(skyk) -> list[dict]:
    result = skyk("jobs", "queue", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def job(skyk, job_id: int) -> dict:
    return next(j for j in queue(skyk) if j["id"] == job_id)


def wait_status(skyk, job_id: int, *statuses: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (found := job(skyk, job_id))["status"] in statuses and found, timeout=timeout,
                    interval=0.2, what=f"job {job_id} to be {' or '.join(statuses)}")


def controller_pid(home) -> int | None:
    """The running jobs controller's pid (it holds its lock), or None."""
    from skyk.jobs.daemon import running_pid

    return running_pid()


def _stop_controller(home) -> None:
    pid = controller_pid(home)
    if pid:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", what="controller exit")


def task_file(tmp_path, text: str, name: str = "task.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def submit(skyk, path: str, *flags: str) -> int:
    result = skyk("jobs", "launch", path, "-d", *flags)
    assert result.returncode == 0, result.stderr
    return max(j["id"] for j in queue(skyk))


def logs(skyk, job_id: int) -> str:
    result = skyk("jobs", "logs", str(job_id), "--no-follow")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_job_runs_to_success_and_leaves_no_cluster(jobs, tmp_path):
    path = task_file(tmp_path, "name: hello\nresources:\n  cloud: local\n"
                               "run: |\n  echo \"id=$SKYK_TASK_ID sky=$SKYPILOT_TASK_ID\"\n  echo done\n")
    result = jobs("jobs", "launch", path)  # follows the log to the end
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout and "SUCCEEDED" in result.stderr
    [found] = queue(jobs)
    assert found["status"] == "SUCCEEDED" and found["name"] == "hello" and found["recoveries"] == 0
    assert "id=skyk-managed-" in result.stdout and f"_{found['id']}_0 sky=skyk-managed-" in result.stdout
    table = jobs("jobs", "queue")
    for header in ("ID", "TASK", "NAME", "RESOURCES", "SUBMITTED", "TOT. DURATION", "JOB DURATION",
                   "#RECOVERIES", "STATUS"):
        assert header in table.stdout
    assert status_json(jobs) == []


def test_setup_failure_ends_failed_setup_without_retrying(jobs, tmp_path):
    path = task_file(tmp_path, "resources:\n  cloud: local\n  job_recovery:\n    max_restarts_on_errors: 3\n"
                               "setup: exit 7\nrun: echo never\n")
    result = jobs("jobs", "launch", path)
    assert result.returncode == 1 and "FAILED_SETUP" in result.stderr
    [found] = queue(jobs)
    assert found["status"] == "FAILED_SETUP" and found["recoveries"] == 0
    assert logs(jobs, found["id"]).count("=== skyk: task 1/1, attempt") == 1


def test_errors_restart_up_to_max_restarts_then_fail(jobs, tmp_path):
    path = task_file(tmp_path, "resources:\n  cloud: local\n  job_recovery:\n    max_restarts_on_errors: 2\n"
                               "run: echo try; exit 3\n")
    job_id = submit(jobs, path)
    found = wait_status(jobs, job_id, "FAILED")
    assert found["error_restarts"] == 2 and found["recoveries"] == 2 and "exit code 3" in found["note"]
    assert logs(jobs, job_id).count("try") == 3


def test_recover_on_exit_codes_restarts_without_counting(jobs, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    # Exits 33 twice, then succeeds; max_restarts_on_errors 0 would not allow a single restart.
    path = task_file(tmp_path, "resources:\n  cloud: local\n  job_recovery:\n    recover_on_exit_codes: [33]\n"
                               f"run: |\n  n=$(ls {marks} | wc -l); touch {marks}/$n\n"
                               "  if [ $n -lt 2 ]; then exit 33; fi\n  echo third time\n")
    job_id = submit(jobs, path)
    found = wait_status(jobs, job_id, "SUCCEEDED", "FAILED")
    assert found["status"] == "SUCCEEDED" and found["recoveries"] == 2 and found["error_restarts"] == 0
    assert "third time" in logs(jobs, job_id)


def test_cancel_tears_the_cluster_down_and_is_idempotent(jobs, tmp_path):
    path = task_file(tmp_path, "resources:\n  cloud: local\nrun: echo started; sleep 600\n")
    job_id = submit(jobs, path)
    wait_for(lambda: "started" in logs(jobs, job_id), timeout=60, what="the job to start")
    hidden = jobs("status")
    assert "skyk-jobs-" not in hidden.stdout and "managed jobs not shown" in hidden.stdout
    assert [c["owner"] for c in status_json(jobs)] == []  # hidden from status
    refused = jobs("down", f"skyk-jobs-{job_id}", "-y")
    assert refused.returncode != 0 and "jobs cancel" in refused.stderr
    cancel = jobs("jobs", "cancel", str(job_id), "-y")
    assert cancel.returncode == 0, cancel.stderr
    wait_status(jobs, job_id, "CANCELLED")
    again = jobs("jobs", "cancel", str(job_id), "-y")
    assert again.returncode == 0 and "already CANCELLED" in again.stderr
    wait_for(lambda: node_processes() == {}, what="the job's node to be gone")


def test_a_killed_controller_comes_back_and_the_job_is_not_duplicated(jobs, tmp_path, isolated_home):
    path = task_file(tmp_path, "resources:\n  cloud: local\n"
                               "run: |\n  echo begin\n  sleep 4\n  echo end\n")
    job_id = submit(jobs, path)
    wait_for(lambda: "begin" in logs(jobs, job_id), timeout=60, what="the job to start")
    pid = controller_pid(isolated_home)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: controller_pid(isolated_home) is None, what="the controller to die")
    shown = jobs("jobs", "queue")  # notices, and starts a new controller
    assert "started it again" in shown.stderr
    assert controller_pid(isolated_home) not in (None, pid)
    found = wait_status(jobs, job_id, "SUCCEEDED", "FAILED", timeout=60)
    assert found["status"] == "SUCCEEDED" and found["recoveries"] == 0
    output = logs(jobs, job_id)
    assert output.count("attempt 1") == 1 and "attempt 2" not in output
    assert output.count("begin") == 1 and output.count("end") == 1


def test_a_dead_node_is_recovered_and_the_task_id_stays(jobs, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    path = task_file(tmp_path, "resources:\n  cloud: local\n"
                               f"run: |\n  echo \"$SKYK_TASK_ID\" >> {marks}/ids\n"
                               f"  if [ ! -e {marks}/once ]; then touch {marks}/once; sleep 600; fi\n"
                               "  echo finished\n")
    job_id = submit(jobs, path)
    wait_for(lambda: (marks / "once").exists(), timeout=60, what="the first attempt to run")
    kill_until_gone(lambda: list(node_processes()))  # the node dies: its agent never answers again
    found = wait_status(jobs, job_id, "SUCCEEDED", "FAILED", timeout=90)
    assert found["status"] == "SUCCEEDED" and found["recoveries"] == 1
    ids = (marks / "ids").read_text().split()
    assert len(ids) == 2 and ids[0] == ids[1]


def test_a_pipeline_runs_its_tasks_in_order_and_a_failure_skips_the_rest(jobs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    steps = "".join(f"---\nname: step{i}\nresources:\n  cloud: local\nrun: echo {i} >> {out}/order\n"
                    for i in range(3))
    job_id = submit(jobs, task_file(tmp_path, "name: pipe\n" + steps, "pipe.yaml"))
    found = wait_status(jobs, job_id, "SUCCEEDED", "FAILED", timeout=90)
    assert found["status"] == "SUCCEEDED" and found["name"] == "pipe" and found["tasks"] == 3
    assert (out / "order").read_text().split() == ["0", "1", "2"]
    broken = ("resources:\n  cloud: local\nrun: exit 1\n---\nresources:\n  cloud: local\n"
              f"run: echo never >> {out}/never\n")
    job_id = submit(jobs, task_file(tmp_path, broken, "broken.yaml"))
    found = wait_status(jobs, job_id, "FAILED", "SUCCEEDED", timeout=60)
    assert found["status"] == "FAILED" and found["task_index"] == 0 and not (out / "never").exists()


@pytest.mark.parametrize(("text", "args", "expected"), [
    ("resources:\n  cloud: local\nsetup: echo only\n", (), "needs a run: command"),
    ("resources:\n  cloud: local\n  accelerators: H100:99\nrun: x\n", (), "H100"),
    ("run: x\n", ("--job-recovery", "SOMEWHERE"), "recovery strategy"),
    ("resources:\n  job_recovery:\n    recover_on_exit_codes: [300]\nrun: x\n", (), "recover_on_exit_codes"),
    ("run: x\n", ("-n", "bad name!"), "-n:"),
])
def test_bad_jobs_are_refused_before_anything_is_recorded(jobs, tmp_path, text, args, expected):
    result = jobs("jobs", "launch", task_file(tmp_path, text), "-d", *args)
    assert result.returncode != 0 and expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert queue(jobs) == []
