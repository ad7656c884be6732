"""The vLLM runtime: install a pinned vLLM on a node and start ``vllm serve``.

Flag spellings and value kinds were checked against vLLM 0.11.0's CLI
(``vllm serve --help``: engine arguments and the OpenAI-compatible frontend);
README.md lists every flag this module writes.
"""

from __future__ import annotations

from skyk.runtime import Boolean, Choice, CommandLineRuntime, Fraction, Integer, Number, TokenCount

_GPUS = "skyk sets it from the node's GPU count; choose GPUs with resources.accelerators"

#: vLLM's ``--dtype`` choices.
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


class VLLMRuntime(CommandLineRuntime):
    """Serve a model with vLLM's OpenAI-compatible server (``vllm serve``)."""

    name = "vllm"
    default_version = "0.11.0"
    # The HTTP server starts only once the engine has loaded the model, and
    # /health answers 200 while the engine is alive: ready means servable.
    readiness_path = "/health"
    queue_metrics = ("vllm:num_requests_waiting",)

    package = "vllm"
    launcher = ("vllm", "serve")
    model_flag = None  # the model is vllm serve's first positional argument
    tensor_parallel_flag = "--tensor-parallel-size"
    # vLLM declares its boolean flags with argparse.BooleanOptionalAction,
    # so `false` can switch off a default-on feature (--no-enable-prefix-caching).
    false_prefix = "no-"

    reserved_flags = {
        "model": "set the model with runtime.model",
        "host": "skyk binds 0.0.0.0 so the serve controller and router reach the engine",
        "port": "set the port with resources.ports or service.ports",
        "uds": "skyk serves over TCP on resources.ports",
        "tensor-parallel-size": _GPUS,
        "tp": _GPUS,
        "api-key": "name a task secret in runtime.api_key; the key is read from it when the job runs",
    }
    known_flags = {
        "max-model-len": TokenCount(),
        "max-num-batched-tokens": TokenCount(),
        "max-num-seqs": Integer(1),
        "gpu-memory-utilization": Fraction(),
        "pipeline-parallel-size": Integer(1),
        "data-parallel-size": Integer(1),
        "seed": Integer(None),
        "swap-space": Number(0),
        "dtype": Choice(DTYPES),
        "enforce-eager": Boolean(),
        "trust-remote-code": Boolean(),
        "enable-prefix-caching": Boolean(),
    }
