"""The SGLang runtime: install a pinned SGLang on a node and start ``sglang.launch_server``.

Flag spellings and value kinds were checked against SGLang 0.5.4's server
arguments (``python -m sglang.launch_server --help``); README.md lists
every flag this module writes.
"""

from __future__ import annotations

from skyk.runtime import Boolean, Choice, CommandLineRuntime, Fraction, Integer, Text

_GPUS = "skyk sets it from the node's GPU count; choose GPUs with resources.accelerators"

#: SGLang's ``--dtype`` choices.
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


class SGLangRuntime(CommandLineRuntime):
    """Serve a model with SGLang's OpenAI-compatible server."""

    name = "sglang"
    default_version = "0.5.4"
    # SGLang's HTTP server answers before its warm-up request has run, and
    # older releases answer /health with a bare 200 even then; /health_generate
    # runs one real token through the model, so 200 there means servable.
    readiness_path = "/health_generate"
    queue_metrics = ("sglang:num_queue_reqs",)

    # The "all" extra brings the serving dependencies launch_server needs.
    package = "sglang[all]"
    launcher = ("python", "-m", "sglang.launch_server")
    model_flag = "--model-path"
    tensor_parallel_flag = "--tp-size"
    # /metrics, which queue-length autoscaling reads, is off unless asked for.
    always_flags = ("--enable-metrics",)
    false_prefix = None  # SGLang's switches are store_true: false means leave out

    reserved_flags = {
        "model-path": "set the model with runtime.model",
        "model": "set the model with runtime.model",
        "host": "skyk binds 0.0.0.0 so the serve controller and router reach the engine",
        "port": "set the port with resources.ports or service.ports",
        "tp-size": _GPUS,
        "tensor-parallel-size": _GPUS,
        "tp": _GPUS,
        "api-key": "name a task secret in runtime.api_key; the key is read from it when the job runs",
        "enable-metrics": "skyk always turns metrics on: queue-length autoscaling reads /metrics",
    }
    known_flags = {
        "context-length": Integer(1),
        "max-running-requests": Integer(1),
        "max-total-tokens": Integer(1),
        "max-prefill-tokens": Integer(1),
        "chunked-prefill-size": Integer(-1),  # -1 turns chunked prefill off
        "mem-fraction-static": Fraction(),
        "random-seed": Integer(None),
        "dp-size": Integer(1),
        "data-parallel-size": Integer(1),
        "pp-size": Integer(1),
        "pipeline-parallel-size": Integer(1),
        "dtype": Choice(DTYPES),
        "served-model-name": Text(),  # one name: SGLang's flag takes a single value
        "trust-remote-code": Boolean(),
        "enable-torch-compile": Boolean(),
        "disable-radix-cache": Boolean(),
        "disable-cuda-graph": Boolean(),
    }
