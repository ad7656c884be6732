"""The vLLM runtime: how to install vLLM on a node and start its OpenAI server."""

from __future__ import annotations

from skyk.runtime import PythonServerRuntime


class VLLMRuntime(PythonServerRuntime):
    """Serve a model with vLLM's OpenAI-compatible API server."""

    name = "vllm"
    readiness_path = "/health"
    queue_length_metric = "vllm:num_requests_waiting"
    package_spec = "vllm"
    launcher = "python -m vllm.entrypoints.openai.api_server"
    model_flag = "--model"
    tensor_parallel_flag = "--tensor-parallel-size"
