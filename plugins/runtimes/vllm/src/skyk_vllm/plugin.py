"""Hook implementations of the vLLM runtime plugin."""

from __future__ import annotations

from skyk.hookspecs import hookimpl

from skyk_vllm.runtime import VLLMRuntime


@hookimpl
def skyk_runtimes():
    """Provide the ``vllm`` runtime."""
    return [VLLMRuntime()]
