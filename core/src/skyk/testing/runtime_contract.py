"""Contract tests every runtime plugin passes: discovery, commands, probe, metrics, bad input.

The commands are not only compared as text: each generated ``setup`` and
``run`` line is run by ``bash`` with fake programs first on ``PATH`` (the
engine, ``python``, ``pip``), which record the arguments they receive. So
quoting, the API key read from a secret, and the tensor-parallel size read
from ``$SKYK_NUM_GPUS_PER_NODE`` are checked as the node's shell sees them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from skyk.errors import SpecError
from skyk.plugins.manager import Kernel
from skyk.runtime import Runtime
from skyk.runtime.resolve import queue_metrics, resolve_task
from skyk.spec.task import Task, task_from_mapping
from skyk.testing.imports import heavy_modules_loaded

#: Modules a runtime plugin must not import: the engines live on the node.
ENGINE_MODULES = ("vllm", "sglang", "torch", "transformers", "tensorrt_llm")

#: Programs a generated command may start; all are faked in the tests.
FAKED_PROGRAMS = ("python", "python3", "pip", "pip3", "uv")

_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_VERSION = re.compile(r"^\d+(\.\d+)*([.+-]?[0-9A-Za-z.]+)?$")
_SECRET = "sk-skyk-contract-0123456789"


class RuntimePluginContract:
    """Subclass this in a test module, set the class attributes, implement the two ``expected_*``.

    ``expected_setup`` and ``expected_serve_argv`` return the argument lists
    (program name first) the engine's installer and server must receive;
    they are where a plugin states its engine's spelling of every flag.
    """

    runtime_name: ClassVar[str]
    #: The program the serve command starts (``vllm``, ``python``...).
    engine_program: ClassVar[str]
    expected_readiness_path: ClassVar[str]
    expected_queue_metrics: ClassVar[tuple[str, ...]]
    #: The model the tests serve.
    model: ClassVar[str] = "Qwen/Qwen2.5-0.5B-Instruct"
    #: The plugin's README, which must list every flag it writes and its default engine version.
    readme: ClassVar[Path]
    #: The distribution ``skyk plugins`` names for the runtime.
    distribution: ClassVar[str]
    #: The engine as the README names it, before the version (``vLLM 0.11.0``).
    engine_title: ClassVar[str]

    def expected_setup(self, version: str) -> list[str]:
        """Return the argv ``setup`` runs to install ``version`` of the engine."""
        raise NotImplementedError

    def expected_serve_argv(self, *, model: str, port: int, gpus: int,
                            api_key: str | None) -> list[str]:
        """Return the argv the server starts with: skyk's own flags, no engine args."""
        raise NotImplementedError

    # ---------------------------------------------------------------- fixtures

    @pytest.fixture(autouse=True)
    def _no_plugin_blocks(self, monkeypatch):
        # A developer's SKYK_DISABLE_PLUGINS would hide the runtime under test.
        monkeypatch.delenv("SKYK_DISABLE_PLUGINS", raising=False)

    @pytest.fixture
    def kernel(self) -> Kernel:
        """A kernel with only this runtime plugin loaded."""
        return Kernel.load(("runtime",), [self.runtime_name])

    @pytest.fixture
    def runtime(self, kernel: Kernel) -> Runtime:
        """The runtime object the plugin registers."""
        return kernel.runtimes()[self.runtime_name]

    @pytest.fixture
    def shell(self, tmp_path: Path):
        """Run a command line with bash, engine and installers faked; return the argv recorded.

        Call as ``shell(command, gpus=8, env={...})``; ``gpus=None`` leaves
        ``SKYK_NUM_GPUS_PER_NODE`` unset.
        """
        if shutil.which("bash") is None:
            pytest.skip("bash is needed to run the generated commands")
        bin_dir = tmp_path / "fake-bin"
        bin_dir.mkdir()
        record = tmp_path / "argv"
        for program in {*FAKED_PROGRAMS, self.engine_program}:
            fake = bin_dir / program
            fake.write_text('#!/bin/sh\nprintf \'%s\\0\' "${0##*/}" "$@" > "$SKYK_CONTRACT_ARGV"\n')
            fake.chmod(0o755)

        def run(command: str, gpus: int | None = 1, env: dict[str, str] | None = None) -> list[str]:
            full = {k: v for k, v in os.environ.items() if k != "SKYK_NUM_GPUS_PER_NODE"}
            full.update(env or {}, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                        SKYK_CONTRACT_ARGV=str(record))
            if gpus is not None:
                full["SKYK_NUM_GPUS_PER_NODE"] = str(gpus)
            record.unlink(missing_ok=True)
            done = subprocess.run(["bash", "-c", command], env=full, capture_output=True,
                                  text=True, timeout=30)
            assert done.returncode == 0, f"{command!r} failed: {done.stderr}"
            assert record.exists(), f"{command!r} started no faked program"
            return record.read_bytes().decode().split("\0")[:-1]

        return run

    def task(self, **fields: Any) -> Task:
        """A task serving ``model`` with this runtime; ``runtime`` entries go in ``runtime_fields``."""
        section = {"engine": self.runtime_name, "model": self.model,
                   **fields.pop("runtime_fields", {})}
        return task_from_mapping({**fields, "runtime": section}, "recipe.yaml")

    def rejection(self, **fields: Any) -> str:
        """Resolve a task that must fail; return its one-line error."""
        with pytest.raises(SpecError) as caught:
            resolve_task(self.task(**fields))
        line = caught.value.one_line()
        assert "\n" not in line and caught.value.hint, line
        return line

    # -------------------------------------------------------------- discovery

    def test_found_by_entry_point_with_distribution(self, kernel: Kernel):
        infos = [i for i in kernel.plugins if i.name == self.runtime_name]
        assert len(infos) == 1, f"plugin {self.runtime_name!r} not discovered exactly once"
        assert infos[0].error is None, infos[0].error
        assert infos[0].distribution != "?" and infos[0].version != "?"

    def test_registers_a_runtime_under_its_name(self, kernel: Kernel, runtime: Runtime):
        assert list(kernel.runtimes()) == [self.runtime_name]
        assert isinstance(runtime, Runtime)
        assert runtime.name == self.runtime_name == self.runtime_name.lower()

    def test_declares_version_probe_and_metrics(self, runtime: Runtime):
        assert _VERSION.match(runtime.default_version), runtime.default_version
        assert runtime.readiness_path == self.expected_readiness_path
        assert runtime.readiness_path.startswith("/")
        assert tuple(runtime.queue_metrics) == tuple(self.expected_queue_metrics)
        assert all(_METRIC.match(name) for name in runtime.queue_metrics)

    def test_blocked_by_skyk_disable_plugins(self, monkeypatch):
        monkeypatch.setenv("SKYK_DISABLE_PLUGINS", f"other,{self.runtime_name.upper()}")
        assert "disabled" in self.rejection()

    def test_import_loads_no_engine(self):
        loaded = heavy_modules_loaded("runtime", self.runtime_name, ENGINE_MODULES)
        assert not loaded, f"importing the {self.runtime_name} plugin loaded {loaded}"

    # ---------------------------------------------------------------- setup

    def test_setup_installs_the_pinned_version(self, runtime: Runtime, shell):
        resolved = resolve_task(self.task())
        assert shell(resolved.setup) == self.expected_setup(runtime.default_version)

    def test_setup_installs_the_version_asked_for(self, shell):
        resolved = resolve_task(self.task(runtime_fields={"version": "9.8.7"}))
        assert shell(resolved.setup) == self.expected_setup("9.8.7")

    # ---------------------------------------------------------------- serving

    @pytest.mark.parametrize("gpus", [1, 8])
    def test_placement(self, gpus: int, shell):
        """One resolved task, run where the optimizer placed it: GPUs read at run time."""
        task = self.task(resources={"accelerators": f"A100:{gpus}"}, service={"replicas": 1})
        resolved = resolve_task(task)
        argv = shell(resolved.run, gpus=gpus)
        assert argv == self.expected_serve_argv(model=self.model, port=8000, gpus=gpus, api_key=None)
        assert resolved.resources.ports == ((8000, 8000),)
        assert resolved.service.readiness_probe.path == self.expected_readiness_path
        assert queue_metrics(resolved) == tuple(self.expected_queue_metrics)
        assert queue_metrics(resolved.model_dump(exclude_none=True, include={"runtime"})) == \
            tuple(self.expected_queue_metrics)

    def test_command_is_the_same_for_every_placement(self):
        runs = {resolve_task(self.task(resources={"accelerators": f"A100:{n}"})).run for n in (1, 2, 8)}
        assert len(runs) == 1, runs

    @pytest.mark.parametrize("gpus", [0, None])
    def test_tensor_parallel_is_at_least_one(self, gpus, shell):
        argv = shell(resolve_task(self.task()).run, gpus=gpus)
        assert argv == self.expected_serve_argv(model=self.model, port=8000, gpus=1, api_key=None)

    def test_port_comes_from_the_task(self, shell):
        resolved = resolve_task(self.task(resources={"ports": [9001, 9100]}))
        assert resolved.resources.ports == ((9001, 9001), (9100, 9100))
        assert shell(resolved.run) == self.expected_serve_argv(model=self.model, port=9001, gpus=1,
                                                               api_key=None)
        resolved = resolve_task(self.task(service={"replicas": 1, "ports": 9002}))
        assert shell(resolved.run) == self.expected_serve_argv(model=self.model, port=9002, gpus=1,
                                                               api_key=None)

    def test_api_key_is_read_from_the_secret_at_run_time(self, shell):
        task = self.task(secrets={"SKYK_CONTRACT_KEY": _SECRET},
                         runtime_fields={"api_key": "SKYK_CONTRACT_KEY"})
        resolved = resolve_task(task)
        assert _SECRET not in resolved.run and _SECRET not in resolved.setup
        argv = shell(resolved.run, env={"SKYK_CONTRACT_KEY": _SECRET})
        assert argv == self.expected_serve_argv(model=self.model, port=8000, gpus=1, api_key=_SECRET)

    @pytest.mark.parametrize("model", ["my model", "x; rm -rf /", "$(reboot)", "it's", "/models/7b"])
    def test_model_reaches_the_engine_as_one_word(self, model: str, shell):
        task = task_from_mapping({"runtime": {"engine": self.runtime_name, "model": model}}, "r.yaml")
        argv = shell(resolve_task(task).run)
        assert argv == self.expected_serve_argv(model=model, port=8000, gpus=1, api_key=None)

    def test_known_flags_reach_the_engine(self, runtime: Runtime, shell):
        for flag, kind in runtime.known_flags.items():
            value = kind.example
            argv = shell(resolve_task(self.task(runtime_fields={"args": {flag: value}})).run)
            assert f"--{flag}" in argv, (flag, argv)
            if value is not True:
                assert argv[argv.index(f"--{flag}") + 1] == str(value), (flag, argv)

    def test_other_flags_pass_through(self, shell):
        args = {"some_new_flag": "a b", "listed-flag": ["x", 2], "json-flag": {"k": [1, True]},
                "switch": True}
        argv = shell(resolve_task(self.task(runtime_fields={"args": args})).run)
        tail = argv[argv.index("--some-new-flag"):]
        assert tail[:5] == ["--some-new-flag", "a b", "--listed-flag", "x", "2"]
        assert tail[5:8] == ["--json-flag", '{"k":[1,true]}', "--switch"]

    # ------------------------------------------------------------ what wins

    def test_the_users_setup_run_and_probe_win(self):
        task = self.task(setup="echo mine", run="echo my server",
                         service={"replicas": 1, "readiness_probe": "/ready"})
        resolved = resolve_task(task)
        assert (resolved.setup, resolved.run) == ("echo mine", "echo my server")
        assert resolved.service.readiness_probe.path == "/ready"
        assert queue_metrics(resolved) == tuple(self.expected_queue_metrics)

    def test_resolving_twice_changes_nothing(self):
        once = resolve_task(self.task(service={"replicas": 1}))
        assert resolve_task(once) == once

    # ---------------------------------------------------------- bad input

    def test_flags_skyk_sets_are_rejected(self, runtime: Runtime):
        assert runtime.reserved_flags, "a runtime must name the flags skyk sets for it"
        for flag in runtime.reserved_flags:
            line = self.rejection(runtime_fields={"args": {flag: "1"}})
            assert f"runtime.args.{flag}" in line and "skyk sets itself" in line, line

    def test_bad_values_are_rejected(self, runtime: Runtime):
        for flag, kind in runtime.known_flags.items():
            line = self.rejection(runtime_fields={"args": {flag.replace("-", "_"): kind.bad_example}})
            assert f"runtime.args.{flag.replace('-', '_')}" in line and "expects" in line, line

    def test_api_key_must_name_a_secret(self):
        line = self.rejection(runtime_fields={"api_key": "NOT_A_SECRET"})
        assert "runtime.api_key" in line and "NOT_A_SECRET" in line

    def test_generated_command_serves_one_node(self):
        assert "num_nodes is 2" in self.rejection(num_nodes=2)

    # ------------------------------------------------------ docs and listing

    def test_readme_names_the_default_version(self, runtime: Runtime):
        assert f"{self.engine_title} {runtime.default_version}" in self.readme.read_text()

    def test_readme_lists_every_flag_the_plugin_writes(self):
        task = task_from_mapping({"secrets": {"K": "v"}, "runtime": {
            "engine": self.runtime_name, "model": "m", "api_key": "K"}}, "r.yaml")
        written = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", resolve_task(task).run))
        table = self.readme.read_text()
        missing = sorted(flag for flag in written if f"`{flag}" not in table)
        assert not missing, f"{self.readme} does not list {missing}"

    def test_skyk_plugins_lists_the_distribution(self):
        import json

        env = {k: v for k, v in os.environ.items() if k != "SKYK_DISABLE_PLUGINS"}
        result = subprocess.run([sys.executable, "-m", "skyk", "plugins", "-o", "json"],
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
        assert rows[("runtime", self.runtime_name)]["distribution"] == self.distribution
        assert rows[("runtime", self.runtime_name)]["status"] == "ok"
