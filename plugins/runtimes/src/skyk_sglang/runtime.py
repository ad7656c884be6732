"""The SGLang runtime: how to install SGLang on a node and start its server."""

from __future__ import annotations

from skyk.runtime import PythonServerRuntime


class SGLangRuntime(PythonServerRuntime):
    """Serve a model with SGLang's OpenAI-compatible server."""

    name = "sglang"
    readiness_path = "/health"
    queue_length_metric = "sglang:num_queue_reqs"
    # The "all" extra brings the serving dependencies launch_server needs.
    package_spec = "sglang[all]"
    launcher = "python -m sglang.launch_server"
    model_flag = "--model-path"
    tensor_parallel_flag = "--tp"
