"""File mount destinations as SkyPilot takes them: relative ones land in the workdir on the
node, and ``$VAR``/``${VAR}`` in them are filled from ``envs`` (and ``--env``)."""

from __future__ import annotations

import pytest
from lifecycle_helpers import down_everything
from skyk.errors import SpecError
from skyk.spec.task import task_from_mapping


@pytest.fixture
def cli(skyk, isolated_home):
    yield skyk
    down_everything(skyk, isolated_home)


def test_relative_and_env_destinations_land_where_skypilot_puts_them(cli, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "p.txt").write_text("payload\n")
    task = tmp_path / "task.yaml"
    task.write_text(f"""\
envs:
  DATA_DIR: ~/mydata
file_mounts:
  rel/data: {tmp_path / 'src'}
  $DATA_DIR: {tmp_path / 'src'}
  ${{DATA_DIR}}-file/p.txt: {tmp_path / 'src' / 'p.txt'}
run: cat rel/data/p.txt ~/mydata/p.txt ~/mydata-file/p.txt
""")
    result = cli("launch", "-c", "fm", "--cloud", "local", str(task), "-y", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("payload") == 3
    # --env overrides envs before the destinations are filled.
    result = cli("launch", "-c", "fm", str(task), "--env", "DATA_DIR=~/other", "-y", timeout=120)
    assert result.returncode == 0, result.stderr
    result = cli("exec", "fm", "cat ~/other/p.txt ~/other-file/p.txt", timeout=120)
    assert result.returncode == 0 and result.stdout.count("payload") == 2, result.stderr


def test_destinations_are_checked_again_once_filled():
    task = task_from_mapping({"envs": {"D": "../up"}, "file_mounts": {"$D": "/tmp"}}, "t.yaml")
    assert task.file_mounts == {"$D": "/tmp"}
    with pytest.raises(SpecError, match="must be a path inside the workdir"):
        task.with_overrides().check_ready()
