"""Every hook is documented in its spec and in the README's plugin guide."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from skyk import hookspecs

REPO = Path(__file__).resolve().parents[1]


HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if name.startswith("skyk_")]


def test_there_are_hooks_for_every_area():
    source = inspect.getsource(hookspecs)
    for area in ("# Catalog", "# Provision", "# Runtime", "# Scaling policy"):
        assert area in source
    assert len(HOOKS) >= 6


@pytest.mark.parametrize("name", HOOKS)
def test_hook_docstring_says_when_what_and_how_results_combine(name):
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc, f"{name} has no docstring"
    assert "Called" in doc, f"{name}: say when it is called"
    assert "All results are collected." in doc or "Stops at first non-None result." in doc
    params = inspect.signature(getattr(hookspecs, name)).parameters
    for param in params:
        assert f":param {param}:" in doc, f"{name}: document parameter {param}"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_in_the_plugin_guide(name):
    assert f"`{name}" in (REPO / "README.md").read_text(), f"README does not document {name}"
