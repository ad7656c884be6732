"""How much GPU memory a served model needs, and which GPU sets hold it.

Pure: reads at most a local ``config.json``, never the network.

The rule
--------
``weights = parameters × bytes per parameter`` and
``needed = weights × 1.2 + 2 GiB``:

- the 20% is the KV cache (and its block tables): its size per token grows
  with layers × KV heads, i.e. with the model, and 20% of the weights buys a
  useful batch of long sequences;
- the 2 GiB is the engine's fixed cost: the activation peak of a full
  prefill batch, CUDA graphs, sampler buffers.

``count`` GPUs of ``M`` GiB hold the model when ``count × M × usable ≥
needed``; ``usable`` is the share of GPU memory the engine takes
(``gpu_memory_utilization`` for vLLM, ``mem_fraction_static`` for SGLang;
0.9 by default), the rest being the CUDA context and NCCL buffers.
``count`` is a tensor-parallel size (1, 2, 4 or 8 on one node): engines
split attention heads evenly, and heads come in powers of two. The estimate
is per node: every node of a multi-node task holds the whole model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyk.catalog.gpus import gpu_spec
from skyk.errors import SpecError

#: KV-cache headroom as a multiple of the weights, and the engine's fixed cost.
HEADROOM = 1.2
OVERHEAD_GIB = 2.0
#: vLLM's default ``gpu_memory_utilization``.
DEFAULT_USABLE_FRACTION = 0.9
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)

_GIB = 1024 ** 3
#: What the error for an unsized model suggests.
_SIZE_HINT = ("give resources.accelerators, or serve a local directory holding config.json,"
              " or a model name with its size such as Qwen2-7B")

# A size is a number with B(illion) or M(illion), standing alone between
# separators: "Qwen2-72B", "0.5B", "pythia-70m"; not "A2.7B" (active
# parameters of an MoE) nor "4k" (a context length).
_EDGE = r"(?<![a-z0-9.])", r"(?![a-z0-9])"
_SIZE = r"(\d+(?:\.\d+)?)([bm])"
_MOE_NAME = re.compile(_EDGE[0] + r"(\d+)x" + _SIZE + _EDGE[1], re.IGNORECASE)
_SIZE_NAME = re.compile(_EDGE[0] + _SIZE + _EDGE[1], re.IGNORECASE)
_UNITS = {"b": 1e9, "m": 1e6}

_DTYPE_BYTES = {"auto": 2.0, "float16": 2.0, "half": 2.0, "fp16": 2.0, "bfloat16": 2.0,
                "bf16": 2.0, "float32": 4.0, "float": 4.0, "fp32": 4.0}
_DTYPE_LABELS = {"half": "float16", "fp16": "float16", "bf16": "bfloat16", "float": "float32",
                 "fp32": "float32"}

# Engine ``quantization`` values -> bytes per weight. GPTQ, Marlin and
# bitsandbytes can be 8-bit too; 4-bit is their common use, and config.json
# (``quantization_config.bits``) says which when the model is local.
_QUANT_BYTES = {"awq": 0.5, "awq_marlin": 0.5, "gptq": 0.5, "gptq_marlin": 0.5, "marlin": 0.5,
                "int4": 0.5, "bitsandbytes": 0.5, "fp8": 1.0, "fbgemm_fp8": 1.0, "int8": 1.0,
                "w8a8_int8": 1.0, "w8a8_fp8": 1.0}

# Words in a model name that say it is quantized ("Qwen2-7B-Instruct-GPTQ-Int8").
# A width ("int8", "4bit") outranks a method ("gptq"), which comes in several.
_NAME_WIDTHS = {"int4": 0.5, "4bit": 0.5, "nf4": 0.5, "w4a16": 0.5,
                "int8": 1.0, "8bit": 1.0, "w8a8": 1.0, "w8a16": 1.0}
_NAME_METHODS = {"awq": 0.5, "gptq": 0.5, "fp8": 1.0}


@dataclass(frozen=True)
class Estimate:
    """The GPU memory a model needs to be served, and where each number came from."""

    model: str
    params: float
    bytes_per_param: float
    #: How the weights are stored: a dtype (``bfloat16``) or a quantization (``awq 4-bit``).
    dtype: str
    weights_gib: float
    needed_gib: float
    usable_fraction: float
    #: ``config.json`` or ``model name``.
    source: str

    def describe(self) -> str:
        """Return one line for people, e.g. ``~72B parameters (from model name), bfloat16: ...``."""
        return (f"~{format_params(self.params)} parameters (from {self.source}), {self.dtype}:"
                f" {gib(self.weights_gib)} GiB of weights, needs ~{gib(self.needed_gib)} GiB of GPU"
                " memory")

    def as_dict(self) -> dict[str, Any]:
        """Return the estimate for ``-o json``."""
        return {"model": self.model, "params": self.params, "bytes_per_param": self.bytes_per_param,
                "dtype": self.dtype, "weights_gib": round(self.weights_gib, 2),
                "needed_gib": round(self.needed_gib, 2), "usable_fraction": self.usable_fraction,
                "source": self.source}


@dataclass(frozen=True)
class GpuFit:
    """A set of ``count`` GPUs of one kind that holds an estimated model."""

    accelerator: str
    count: int
    gpu_gib: float
    usable_fraction: float
    needed_gib: float

    @property
    def total_gib(self) -> float:
        """GPU memory of the whole set."""
        return self.count * self.gpu_gib

    @property
    def usable_gib(self) -> float:
        """The part of it the engine takes."""
        return self.total_gib * self.usable_fraction

    def why(self) -> str:
        """Return why it fits, e.g. ``4x A100-80GB = 320 GiB (288 usable) ≥ 162.9 GiB needed``."""
        return (f"{self.count}x {self.accelerator} = {gib(self.total_gib)} GiB"
                f" ({gib(self.usable_gib)} usable) ≥ {gib(self.needed_gib)} GiB needed")


@dataclass(frozen=True)
class ModelSizing:
    """An estimate and the GPU sets the catalogs offer that hold it."""

    estimate: Estimate
    fits: tuple[GpuFit, ...]

    def fit_for(self, accelerator: str | None, count: float) -> GpuFit | None:
        """Return the fit behind an offering's accelerators, if sizing proposed them."""
        for fit in self.fits:
            if fit.accelerator == accelerator and fit.count == count:
                return fit
        return None

    def smallest(self) -> list[GpuFit]:
        """The fewest GPUs of each kind that fit, smallest total memory first."""
        best: dict[str, GpuFit] = {}
        for fit in self.fits:
            if fit.accelerator not in best or fit.count < best[fit.accelerator].count:
                best[fit.accelerator] = fit
        return sorted(best.values(), key=lambda f: (f.total_gib, f.accelerator))


def gib(value: float) -> str:
    """Format GiB with one decimal, without a needless ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def format_params(params: float) -> str:
    """Format a parameter count as ``72B``, ``7.6B`` or ``350M``."""
    if params >= 1e9:
        return f"{params / 1e9:.1f}".removesuffix(".0") + "B"
    return f"{params / 1e6:.0f}M"


def runtime_model(task: object) -> tuple[str, Mapping[str, Any]] | None:
    """Return (model, engine args) of a task's ``runtime:`` section, or None without one.

    Read with ``getattr``: any object with a ``runtime`` carrying ``model``
    and ``args`` will do, and tasks from before ``runtime:`` existed have none.
    """
    runtime = getattr(task, "runtime", None)
    model = getattr(runtime, "model", None)
    if not isinstance(model, str) or not model.strip():
        return None
    args = getattr(runtime, "args", None) or {}
    return model.strip(), args


def params_from_name(model: str) -> float | None:
    """Return the parameter count a model name states, or None.

    ``Qwen/Qwen2-72B-Instruct`` gives 72e9, ``opt-350M`` 350e6. An MoE name
    ``8x7B`` gives 56e9: more than Mixtral's real 46.7e9, since its experts
    share attention and embeddings, but every expert must be in memory and
    erring high picks a set that fits. With several sizes, the largest.
    """
    name = model.rstrip("/").rsplit("/", 1)[-1]  # an organisation name states no size
    moe = _MOE_NAME.search(name)
    if moe:
        return int(moe.group(1)) * float(moe.group(2)) * _UNITS[moe.group(3).lower()]
    sizes = [float(m.group(1)) * _UNITS[m.group(2).lower()] for m in _SIZE_NAME.finditer(name)]
    return max(sizes) if sizes else None


def _first(config: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    if default is None:
        raise KeyError(keys[0])
    return default


def params_from_config(config: Mapping[str, Any]) -> float:
    """Count a decoder model's parameters from its Hugging Face ``config.json``.

    Embeddings (twice unless ``tie_word_embeddings``), then per layer the
    attention projections (grouped-query aware) and the MLP: three matrices
    when gated (SiLU: Llama, Qwen, Mistral; Gemma), else two. For an MoE
    (``num_experts``, ``num_local_experts``, ``n_routed_experts``) every
    expert's MLP counts, plus shared experts. Norms and biases are left
    out (well under 0.1%). Raises ``KeyError`` naming a missing field.
    """
    if "hidden_size" not in config and isinstance(config.get("text_config"), Mapping):
        config = config["text_config"]  # a vision-language model: the language part dominates
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(config, "vocab_size")
    heads = _first(config, "num_attention_heads", "n_head")
    kv_heads = _first(config, "num_key_value_heads", default=heads)
    head_dim = _first(config, "head_dim", default=hidden // heads)
    inner = _first(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
    activation = str(config.get("hidden_act") or config.get("hidden_activation") or "")
    gated = activation in ("silu", "swish", "swiglu") or str(
        config.get("model_type", "")).startswith("gemma")
    matrices = 3 if gated else 2

    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q and o; k and v
    experts = _first(config, "num_local_experts", "num_experts", "n_routed_experts", default=1)
    if experts > 1:
        expert_inner = _first(config, "moe_intermediate_size", default=inner)
        # Shared experts: one wide MLP (Qwen2-MoE) or several expert-sized ones (DeepSeek).
        shared = (_first(config, "shared_expert_intermediate_size", default=0)
                  + _first(config, "n_shared_experts", default=0) * expert_inner)
        mlp = matrices * hidden * (experts * expert_inner + shared)
    else:
        mlp = matrices * hidden * inner
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return float(layers * (attention + mlp) + embeddings)


def read_config(model: str) -> tuple[dict[str, Any], Path] | None:
    """Return the parsed ``config.json`` of a model that is a local directory, or None.

    Raises ``SpecError`` when the file is there but is not a JSON mapping.
    """
    path = Path(model).expanduser() / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot read the model's config: {exc}",
                        hint="fix the file, or give resources.accelerators") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object", hint="fix the file, or give"
                        " resources.accelerators")
    return data, path


def _normal(args: Mapping[str, Any]) -> dict[str, Any]:
    # Engines spell flags with dashes (--gpu-memory-utilization) and recipes
    # often with underscores; compare them as one.
    return {str(k).lstrip("-").replace("-", "_").lower(): v for k, v in args.items()}


def _config_quantization(config: Mapping[str, Any] | None) -> tuple[float, str] | None:
    quant = (config or {}).get("quantization_config")
    if not isinstance(quant, Mapping):
        return None
    method = str(quant.get("quant_method") or "quantized").lower()
    bits = quant.get("bits") or quant.get("w_bit")
    if quant.get("load_in_4bit"):
        bits = 4
    elif quant.get("load_in_8bit"):
        bits = 8
    if isinstance(bits, int) and bits > 0:
        return bits / 8, f"{method} {bits}-bit"
    if method in _QUANT_BYTES:
        return _QUANT_BYTES[method], f"{method} {_QUANT_BYTES[method] * 8:g}-bit"
    return None


def _name_quantization(model: str) -> tuple[float, str] | None:
    words = re.split(r"[^a-z0-9]+", model.rstrip("/").rsplit("/", 1)[-1].lower())
    for table in (_NAME_WIDTHS, _NAME_METHODS):
        for word in words:
            if word in table:
                return table[word], f"{word} {table[word] * 8:g}-bit (from the name)"
    return None


def bytes_per_param(args: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                    model: str = "", where: str = "runtime.args") -> tuple[float, str]:
    """Return (bytes per weight, how they are stored) for engine ``args``.

    ``quantization`` wins (awq/gptq/int4 0.5, fp8/int8 1), then the model's
    own ``quantization_config``, then words in its name (AWQ, GPTQ-Int8,
    FP8), then ``dtype`` (float16/bfloat16/half/auto 2, float32 4; auto,
    the default, loads float32 checkpoints as float16). Keys may use dashes
    or underscores. Raises ``SpecError`` for a value it cannot size.
    """
    args = _normal(args)
    quantization = args.get("quantization")
    if quantization not in (None, False, "", "none", "None"):
        method = str(quantization).lower().replace("-", "_")
        if method not in _QUANT_BYTES:
            raise SpecError(f"{where}.quantization: cannot size quantization {quantization!r}",
                            hint=f"use one of {', '.join(sorted(_QUANT_BYTES))},"
                                 " or give resources.accelerators")
        # A quantized checkpoint knows its bit width better than the method's name does.
        return _config_quantization(config) or (
            _QUANT_BYTES[method], f"{method} {_QUANT_BYTES[method] * 8:g}-bit")
    found = _config_quantization(config) or _name_quantization(model)
    if found:
        return found
    dtype = str(args.get("dtype", "auto")).lower()
    if dtype not in _DTYPE_BYTES:
        raise SpecError(f"{where}.dtype: unknown dtype {args.get('dtype')!r}",
                        hint="use auto, float16, bfloat16 or float32")
    return _DTYPE_BYTES[dtype], _DTYPE_LABELS.get(dtype, dtype)


def usable_fraction(args: Mapping[str, Any], where: str = "runtime.args") -> float:
    """Return the share of GPU memory the engine takes (vLLM's or SGLang's flag, else 0.9)."""
    args = _normal(args)
    for key in ("gpu_memory_utilization", "mem_fraction_static"):
        if key in args:
            value = args[key]
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    value = None
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
                raise SpecError(f"{where}.{key}: expected a fraction in (0, 1], got {args[key]!r}",
                                hint=f"write {key}: 0.9")
            return float(value)
    return DEFAULT_USABLE_FRACTION


def estimate(model: str, args: Mapping[str, Any] | None = None,
             where: str = "runtime") -> Estimate:
    """Estimate the GPU memory ``model`` needs when served with engine ``args``.

    The size comes from ``config.json`` when ``model`` is a local directory
    holding one, else from the name. ``where`` (e.g. ``task.yaml: runtime``)
    prefixes errors. Raises ``SpecError`` when no size can be found.
    """
    args = args or {}
    found = read_config(model)
    config = found[0] if found else None
    if found:
        try:
            params, source = params_from_config(found[0]), "config.json"
        except KeyError as exc:
            raise SpecError(f"{found[1]}: cannot count the model's parameters: no {exc.args[0]}",
                            hint="give resources.accelerators") from None
    else:
        params, source = params_from_name(model), "model name"
        if params is None:
            raise SpecError(f"{where}.model: the size of model {model!r} is unknown",
                            hint=_SIZE_HINT)
    per_param, dtype = bytes_per_param(args, config, model, f"{where}.args")
    weights = params * per_param / _GIB
    return Estimate(model=model, params=params, bytes_per_param=per_param, dtype=dtype,
                    weights_gib=weights, needed_gib=weights * HEADROOM + OVERHEAD_GIB,
                    usable_fraction=usable_fraction(args, f"{where}.args"), source=source)


def fitting_sets(need: Estimate, offered: Mapping[str, Iterable[float]]) -> list[GpuFit]:
    """Return every GPU set the catalogs offer that holds ``need``.

    ``offered`` maps each accelerator name to the counts some offering has.
    A set is a known GPU (``skyk.catalog.gpus``) at a tensor-parallel size;
    all sizes that fit are returned, not only the smallest, because a bigger
    set is at times the cheaper one (spot prices, other clouds) and the
    ranking should see it. GPUs without bfloat16 are left out when the
    args ask for bfloat16 explicitly.
    """
    fits = []
    for name, counts in offered.items():
        spec = gpu_spec(name)
        if spec is None or (need.dtype == "bfloat16" and not spec.bfloat16):
            continue
        for count in sorted(set(counts) & set(TENSOR_PARALLEL_SIZES)):
            if count * spec.memory_gib * need.usable_fraction >= need.needed_gib:
                fits.append(GpuFit(name, int(count), spec.memory_gib, need.usable_fraction,
                                   need.needed_gib))
    return sorted(fits, key=lambda f: (f.accelerator, f.count))
