"""The SSH runner against a real OpenSSH server on loopback (see sshd.py)."""

from __future__ import annotations

import time

import pytest
from skyk.agent.client import AgentClient
from skyk.agent.jobs import TERMINAL
from skyk.agent.runners import RunnerError, runner_from_spec
from sshd import ssh_runner, sshd  # noqa: F401 - pytest fixtures


def test_runs_commands_in_the_remote_home(ssh_runner, sshd):  # noqa: F811
    result = ssh_runner.run("pwd; echo out; echo err >&2")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [str(sshd.home), "out"]
    assert result.stderr.strip() == "err"


def test_exit_codes_come_back(ssh_runner):  # noqa: F811
    assert ssh_runner.run("exit 3").returncode == 3
    assert ssh_runner.run("false").returncode == 1
    assert ssh_runner.run("kill -9 $$").returncode != 0


def test_stdin_reaches_the_command(ssh_runner):  # noqa: F811
    data = "line one\nline 'two' with \"quotes\" and $dollars\n"
    result = ssh_runner.run("cat; echo done", input=data)
    assert result.stdout == data + "done\n"


def test_put_a_directory_and_a_file(ssh_runner, sshd, tmp_path):  # noqa: F811
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("alpha\n")
    (source / "sub" / "b.txt").write_text("beta\n")
    single = tmp_path / "single file.txt"
    single.write_text("gamma\n")

    ssh_runner.put(source, "~/x")
    ssh_runner.put(single, "~/x/copied.txt")

    result = ssh_runner.run("cat x/a.txt x/sub/b.txt x/copied.txt")
    assert result.stdout == "alpha\nbeta\ngamma\n"
    # "~" is the remote user's home, which the server put in the test's directory.
    assert (sshd.home / "x" / "sub" / "b.txt").read_text() == "beta\n"
    with pytest.raises(RunnerError, match="copying"):
        ssh_runner.put(single, "~/x/a.txt/under-a-file.txt")


def test_local_environment_does_not_leak(ssh_runner, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SKYK_TEST_SECRET", "leaked")
    result = ssh_runner.run('echo "${SKYK_TEST_SECRET-unset} ${SKYK_HOME-unset}"')
    assert result.stdout.strip() == "unset unset"


def test_spec_rebuilds_a_working_runner(ssh_runner):  # noqa: F811
    again = runner_from_spec(ssh_runner.spec())
    assert again.run("echo same").stdout == "same\n"
    again.close()


def test_agent_runs_a_job_over_ssh(ssh_runner):  # noqa: F811
    client = AgentClient(ssh_runner)
    client.install()
    client.write_cluster_info({
        "cluster": "ssh-test", "cloud": "ssh", "region": "local", "zone": None,
        "instance_type": "local", "num_nodes": 1, "num_gpus_per_node": 0,
        "node_ips": ["127.0.0.1"], "runners": [ssh_runner.spec()],
        "autostop": {"stop": None, "down": None},
    })
    client.start()
    try:
        job_id = client.submit({"name": "hello", "setup": None, "run": "echo hello from ssh",
                                "envs": {}, "secrets": {}})
        deadline = time.monotonic() + 60
        while (status := client.job(job_id)["status"]) not in TERMINAL:
            assert time.monotonic() < deadline, f"job still {status} after 60s"
            time.sleep(0.1)
        logs = client.logs(job_id, follow=True)
        out, err = logs.communicate(timeout=30)
        assert status == "SUCCEEDED", (out, err)
        assert "hello from ssh" in out.decode()
    finally:
        client.shutdown()
