"""Accelerator names SkyPilot knows but no installed cloud offers (``L40``): in a
choice they are options nothing fits, not errors (SkyPilot's docs list such
sets, e.g. ``{L4, A10g, A10, L40, A40, A100, A100-80GB}``)."""

from __future__ import annotations

import json

from skyk.catalog.accelerators import AcceleratorNames


def _plan(skyk, task, *args: str) -> dict:
    result = skyk("launch", "--dryrun", str(task), *args, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_set_with_names_no_cloud_offers_plans_the_rest(skyk, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("resources:\n  accelerators: {L4, A10g, A10, L40, A40, A100, A100-80GB}\n")
    plan = _plan(skyk, task)
    names = {c["accelerators"]["name"] for c in plan["candidates"]}
    assert names and names <= {"L4", "A10G", "A10", "A100", "A100-80GB"}


def test_a_list_and_any_of_skip_names_no_cloud_offers(skyk, tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("resources:\n  accelerators: [L40, A40, L4]\n")
    assert _plan(skyk, task)["chosen"]["accelerators"]["name"] == "L4"
    task.write_text("resources:\n  ordered:\n    - accelerators: L40\n    - accelerators: T4\n")
    assert _plan(skyk, task)["chosen"]["accelerators"]["name"] == "T4"


def test_names_are_spelled_as_the_catalogs_else_as_skypilot():
    names = AcceleratorNames(["A10G", "MI25"])
    assert names.canonical("a10g") == "A10G"
    assert names.canonical("mi25") == "MI25"
    assert names.canonical("l40") == "L40" and "L40" not in names
    assert names.canonical("rtx4090") == "RTX4090"


def test_alone_a_name_no_cloud_offers_is_refused_with_a_hint(skyk, tmp_path):
    result = skyk("launch", "--dryrun", "--gpus", "L40", "echo hi")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "skyk: error: --gpus: no installed cloud offers L40 (hint: 'skyk show-gpus' lists the"
        " accelerators the installed clouds offer; name one of those, or install a cloud plugin"
        " that offers it)"]
    result = skyk("launch", "--dryrun", "--cloud", "local", "--gpus", "a100", "echo hi")
    assert result.returncode == 3
    assert "the local cloud offers no A100" in result.stderr
    assert "unknown accelerator" not in result.stderr
