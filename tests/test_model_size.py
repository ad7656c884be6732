"""Resources from model size: estimate a served model's GPU memory, offer the GPU sets that hold it."""

from __future__ import annotations

import json

import pytest
from catalog_math import cheapest_that_holds, gpu_memory_mib
from skyk.catalog.gpus import GPUS
from skyk.errors import NoFeasibleResources, SpecError
from skyk.optimizer.model_size import (
    Estimate,
    bytes_per_param,
    estimate,
    fitting_sets,
    params_from_config,
    params_from_name,
    usable_fraction,
)
from skyk.optimizer.planner import plan_task
from skyk.optimizer.ranking import rank
from skyk.spec.resources import Requirement
from skyk.spec.task import task_from_mapping

GIB = 1024 ** 3

#: Hugging Face config.json fields of Qwen2-7B (7.62e9 parameters by its model card).
QWEN2_7B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
            "hidden_size": 3584, "num_hidden_layers": 28, "intermediate_size": 18944,
            "vocab_size": 152064, "num_attention_heads": 28, "num_key_value_heads": 4,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
#: Qwen2-0.5B ties its embeddings (494M parameters).
QWEN2_05B = {**QWEN2_7B, "hidden_size": 896, "num_hidden_layers": 24, "intermediate_size": 4864,
             "vocab_size": 151936, "num_attention_heads": 14, "num_key_value_heads": 2,
             "tie_word_embeddings": True}
#: Mixtral-8x7B: 46.7e9 parameters, all eight experts' MLPs in every layer.
MIXTRAL = {"model_type": "mixtral", "hidden_act": "silu", "hidden_size": 4096,
           "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 32000,
           "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
           "num_experts_per_tok": 2}


def model_dir(tmp_path, config, name="model"):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


# -- the parameter count ---------------------------------------------------------------------

@pytest.mark.parametrize("name, params", [
    ("Qwen/Qwen2-72B-Instruct", 72e9),
    ("7B", 7e9),
    ("Qwen/Qwen2.5-0.5B-Instruct", 0.5e9),
    ("internlm/chat-1.8b", 1.8e9),
    ("meta-llama/Llama-3.1-8B-Instruct", 8e9),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56e9),  # experts x size: errs high on purpose
    ("EleutherAI/pythia-70m", 70e6),
    ("facebook/opt-350M", 350e6),
    ("Qwen/Qwen3-30B-A3B", 30e9),  # A3B counts active parameters, not the size
    ("Qwen/Qwen2-7B-Instruct-GPTQ-Int8", 7e9),
])
def test_parameters_from_the_name(name, params):
    assert params_from_name(name) == pytest.approx(params)


@pytest.mark.parametrize("name", ["gpt2", "microsoft/phi-3-mini-4k-instruct",
                                  "Qwen/Qwen1.5-MoE-A2.7B", "deepseek-ai/DeepSeek-V3"])
def test_names_without_a_size(name):
    assert params_from_name(name) is None


def test_unknown_size_is_a_one_line_spec_error():
    with pytest.raises(SpecError) as info:
        estimate("gpt2", {}, "task.yaml: runtime")
    error = info.value
    assert error.message == "task.yaml: runtime.model: the size of model 'gpt2' is unknown"
    for way in ("resources.accelerators", "config.json", "7B"):
        assert way in error.hint
    assert "\n" not in error.one_line()


@pytest.mark.parametrize("config, params, tolerance", [
    (QWEN2_7B, 7.6e9, 0.01),
    (QWEN2_05B, 0.494e9, 0.01),
    (MIXTRAL, 46.7e9, 0.01),
])
def test_parameters_from_config(config, params, tolerance):
    assert params_from_config(config) == pytest.approx(params, rel=tolerance)


def test_a_local_directory_is_sized_from_its_config(tmp_path):
    # The directory's name says 72B; its config.json is the authority.
    need = estimate(str(model_dir(tmp_path, QWEN2_7B, "Qwen2-72B")))
    assert need.source == "config.json"
    assert need.params == pytest.approx(7.615e9, rel=1e-3)
    need = estimate(str(tmp_path / "missing-Qwen2-7B"))
    assert (need.source, need.params) == ("model name", 7e9)


def test_a_config_it_cannot_count_names_the_file(tmp_path):
    path = model_dir(tmp_path, {"model_type": "mystery", "hidden_size": 64})
    with pytest.raises(SpecError, match=r"config\.json: cannot count .*no num_hidden_layers"):
        estimate(str(path))
    (path / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="cannot read the model's config"):
        estimate(str(path))


# -- bytes per parameter ---------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    ({}, 2.0),
    ({"dtype": "auto"}, 2.0),
    ({"dtype": "float16"}, 2.0),
    ({"dtype": "half"}, 2.0),
    ({"dtype": "bfloat16"}, 2.0),
    ({"dtype": "float32"}, 4.0),
    ({"quantization": "awq"}, 0.5),
    ({"quantization": "gptq", "dtype": "float16"}, 0.5),
    ({"quantization": "int4"}, 0.5),
    ({"quantization": "fp8"}, 1.0),
    ({"quantization": "int8"}, 1.0),
    ({"--quantization": "awq-marlin"}, 0.5),
])
def test_bytes_per_parameter_from_engine_args(args, expected):
    assert bytes_per_param(args)[0] == expected


@pytest.mark.parametrize("model, expected", [
    ("Qwen/Qwen2-72B-Instruct-AWQ", 0.5),
    ("Qwen/Qwen2-7B-Instruct-GPTQ-Int8", 1.0),  # the width outranks the method
    ("neuralmagic/Meta-Llama-3-8B-Instruct-FP8", 1.0),
    ("unsloth/llama-3-8b-bnb-4bit", 0.5),
])
def test_quantized_names(model, expected):
    assert bytes_per_param({}, model=model)[0] == expected


def test_a_quantized_checkpoint_states_its_width():
    config = {"quantization_config": {"quant_method": "gptq", "bits": 8}}
    assert bytes_per_param({"quantization": "gptq"}, config) == (1.0, "gptq 8-bit")
    assert bytes_per_param({}, {"quantization_config": {"quant_method": "awq", "bits": 4}})[0] == 0.5


def test_args_it_cannot_size_are_spec_errors():
    with pytest.raises(SpecError, match=r"runtime\.args\.quantization: cannot size .*'squeezellm'"):
        bytes_per_param({"quantization": "squeezellm"})
    with pytest.raises(SpecError, match=r"runtime\.args\.dtype: unknown dtype 'float8'"):
        bytes_per_param({"dtype": "float8"})
    with pytest.raises(SpecError, match="gpu_memory_utilization: expected a fraction"):
        usable_fraction({"gpu-memory-utilization": 1.5})


def test_usable_fraction_follows_the_engine_flag():
    assert usable_fraction({}) == 0.9
    assert usable_fraction({"gpu-memory-utilization": 0.95}) == 0.95
    assert usable_fraction({"mem_fraction_static": "0.8"}) == 0.8  # SGLang's flag


# -- the estimate and the sets that hold it --------------------------------------------------

def test_estimate_of_a_72b_bfloat16_model():
    need = estimate("Qwen/Qwen2-72B-Instruct", {"dtype": "bfloat16"})
    weights = 72e9 * 2 / GIB
    assert need == Estimate(model="Qwen/Qwen2-72B-Instruct", params=72e9, bytes_per_param=2.0,
                            dtype="bfloat16", weights_gib=pytest.approx(weights),
                            needed_gib=pytest.approx(weights * 1.2 + 2), usable_fraction=0.9,
                            source="model name")
    assert round(need.weights_gib, 1) == 134.1 and round(need.needed_gib, 1) == 162.9
    awq = estimate("Qwen/Qwen2-72B-Instruct", {"quantization": "awq"})
    assert awq.weights_gib == pytest.approx(weights / 4)


def test_fitting_sets_take_every_offered_tensor_parallel_size_that_holds_it():
    need = estimate("Qwen2-72B")  # needs ~162.9 GiB; 90% of each GPU is usable
    offered = {"A100-80GB": {1.0, 2.0, 4.0, 8.0}, "L40S": {1.0, 4.0, 8.0}, "L4": {1.0, 8.0},
               "H100": {16.0}, "MI300X": {8.0}, "A10": {0.5, 1.0}}
    fits = {(f.accelerator, f.count) for f in fitting_sets(need, offered)}
    # 2x80 GiB (144 usable) and 4x L40S (161 usable) fall short; 8x L4 (161 usable) too;
    # 16 GPUs is no tensor-parallel size here, and MI300X is not a GPU sizing serves on.
    assert fits == {("A100-80GB", 4), ("A100-80GB", 8), ("L40S", 8)}
    fit = next(f for f in fitting_sets(need, offered) if f.count == 4)
    assert fit.why() == "4x A100-80GB = 320 GiB (288 usable) ≥ 162.9 GiB needed"


def test_bfloat16_leaves_out_gpus_without_it():
    offered = {"V100-32GB": {8.0}, "A100": {8.0}}
    assert {f.accelerator for f in fitting_sets(estimate("Qwen2-72B"), offered)} == {"V100-32GB", "A100"}
    need = estimate("Qwen2-72B", {"dtype": "bfloat16"})
    assert {f.accelerator for f in fitting_sets(need, offered)} == {"A100"}


def test_gpu_memory_table_matches_the_catalogs(shared_catalogs):
    stated = gpu_memory_mib([shared_catalogs / "aws" / "vms.csv", shared_catalogs / "gcp" / "vms.csv"])
    checked = {name for name in GPUS if name in stated}
    assert checked >= {"T4", "V100", "A10G", "L4", "L40S", "A100", "A100-80GB", "H100", "H200", "B200"}
    assert {name: GPUS[name].memory_mib for name in checked} == {name: stated[name] for name in checked}


# -- the planner -----------------------------------------------------------------------------

def served(resources: dict | None = None, model="Qwen/Qwen2-72B-Instruct", args=None, source="t.yaml"):
    """A task that serves ``model`` on vLLM with these resources."""
    return task_from_mapping({"name": "served", "resources": resources or {},
                              "runtime": {"engine": "vllm", "model": model, "args": args or {}}},
                             source)


@pytest.fixture
def catalogs(shared_catalogs, monkeypatch):
    monkeypatch.setenv("SKYK_CATALOG_DIR", str(shared_catalogs))
    return shared_catalogs


@pytest.mark.parametrize("spot", [False, True])
def test_planner_picks_the_cheapest_offering_that_holds_a_72b_model(catalogs, spot):
    planned = plan_task(served({"use_spot": True} if spot else None))
    needed = 72e9 * 2 / GIB * 1.2 + 2  # the documented rule, written out
    expected, sets = cheapest_that_holds(catalogs, needed, spot)
    best = planned.plan.best
    assert best.hourly_cost == pytest.approx(expected)
    assert (best.offering.accelerator, best.offering.accelerator_count) in sets
    assert best.use_spot is spot
    assert planned.sizing.estimate.needed_gib == pytest.approx(needed)
    fit = planned.sizing.fit_for(best.offering.accelerator, best.offering.accelerator_count)
    assert fit.usable_gib >= needed and "GiB needed" in fit.why()
    assert all(c.offering.accelerator for c in planned.plan.candidates)  # no CPU box for a model


def test_accelerators_the_user_gives_are_left_alone(catalogs):
    planned = plan_task(served({"accelerators": "L4:1", "infra": "aws"}))
    assert planned.sizing is None
    assert planned.plan.best.offering.accelerators_label == "L4:1"
    planned = plan_task(served({"instance_type": "g5.xlarge"}))
    assert planned.sizing is None and planned.plan.best.offering.instance_type == "g5.xlarge"


def test_any_of_alternatives_without_accelerators_are_sized(catalogs):
    planned = plan_task(served({"any_of": [{"infra": "aws"}, {"accelerators": "H100:1"}]}))
    labels = {c.offering.accelerators_label for c in planned.plan.candidates}
    assert "H100:1" in labels  # as given, though it cannot hold the model
    assert "A100:8" in labels and "L4:1" not in labels


def test_ordered_alternatives_keep_their_order(catalogs):
    # GCP is cheaper for this model, but the user prefers Azure.
    planned = plan_task(served({"ordered": [{"cloud": "azure"}, {"cloud": "gcp"}]}))
    assert planned.plan.best.offering.cloud == "azure"
    azure = [c for c in planned.plan.candidates if c.offering.cloud == "azure"]
    assert planned.plan.best.hourly_cost == min(c.hourly_cost for c in azure)


def test_a_model_too_big_for_any_node(catalogs):
    with pytest.raises(NoFeasibleResources) as info:
        plan_task(served(model="huge-2000B"))
    assert "t.yaml: runtime.model: huge-2000B needs ~4472 GiB" in info.value.message
    assert "largest: 8x B200" in info.value.message
    assert "quantized" in info.value.hint


def test_unknown_size_fails_before_reading_catalogs(monkeypatch, tmp_path):
    monkeypatch.setenv("SKYK_CATALOG_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SpecError, match="size of model 'gpt2' is unknown"):
        plan_task(served(model="gpt2"))


def test_clouds_without_gpus_run_the_task_as_written(catalogs):
    # The local cloud offers this machine; with no GPU there, nothing is sized.
    planned = plan_task(served({"cloud": "local"}, model="Qwen2-0.5B"))
    assert planned.plan.best.offering.cloud == "local"


def test_rank_preferences_group_requirements():
    from skyk.catalog.offering import Offering
    from skyk.catalog.store import Catalog

    def off(cloud, acc, count, price):
        return Offering(cloud, f"{cloud}.{acc}", 8, 32, "r", None, price, None, acc, float(count))

    catalog = Catalog({"a": [off("a", "A100", 8, 20.0), off("a", "L40S", 8, 15.0)],
                       "b": [off("b", "L40S", 8, 10.0)]})
    reqs = [Requirement(cloud="a", accelerator="A100", accelerator_count=8),
            Requirement(cloud="a", accelerator="L40S", accelerator_count=8),
            Requirement(cloud="b", accelerator="L40S", accelerator_count=8)]
    # Alternative 0 is two GPU sets on cloud a: its cheaper set wins over its first one.
    best = rank(catalog, reqs, ordered=True, preferences=[0, 0, 1]).best.offering
    assert best.instance_type == "a.L40S"
    assert rank(catalog, reqs, ordered=True).best.offering.instance_type == "a.A100"


# -- the dry run -----------------------------------------------------------------------------

def test_dry_run_shows_the_estimate_and_why_each_fits(skyk, tmp_path, shared_catalogs):
    path = tmp_path / "qwen.yaml"
    path.write_text("name: qwen72\nruntime:\n  engine: vllm\n  model: Qwen/Qwen2-72B-Instruct\n"
                    "  args:\n    dtype: bfloat16\n")
    result = skyk("launch", "--dryrun", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Model Qwen/Qwen2-72B-Instruct (size from model name):" in out
    assert "~72B parameters x 2 bytes (bfloat16) = 134.1 GiB of weights" in out
    assert "needs ~162.9 GiB" in out and "WHY IT FITS" in out
    chosen = next(line for line in out.splitlines() if "✔" in line)
    assert "≥ 162.9 GiB needed" in chosen

    result = skyk("launch", "--dryrun", str(path), "-o", "json")
    data = json.loads(result.stdout)
    expected, _ = cheapest_that_holds(shared_catalogs, 72e9 * 2 / GIB * 1.2 + 2, False)
    assert data["chosen"]["hourly_cost"] == pytest.approx(expected)
    assert data["model_size"]["source"] == "model name"
    assert data["chosen"]["fits"].endswith("≥ 162.9 GiB needed")
