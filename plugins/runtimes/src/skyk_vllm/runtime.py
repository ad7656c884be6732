"""The vLLM runtime: how to install vLLM on a node and start its OpenAI server."""

from __future__ import annotations

import shlex

from skyk.runtime import Runtime, RuntimeRecipe, engine_flags

#: What ``pip install`` is given on the node. A module constant so a fork or a
#: test can pin a version in one place instead of threading it through recipes.
PACKAGE_SPEC = "vllm"


class VLLMRuntime(Runtime):
    """Serve a model with vLLM's OpenAI-compatible API server.

    Tensor parallelism is read from ``$SKYK_NUM_GPUS_PER_NODE`` when the command
    runs, so one command fits whichever accelerator count the optimizer chose.
    """

    name = "vllm"
    readiness_path = "/health"
    queue_length_metric = "vllm:num_requests_waiting"

    def setup_command(self, recipe: RuntimeRecipe) -> str:
        """Return the ``pip install`` command that puts vLLM on the node."""
        return f"pip install {shlex.quote(PACKAGE_SPEC)}"

    def serve_command(self, recipe: RuntimeRecipe) -> str:
        """Return the command that serves ``recipe.model`` on ``recipe.port``, all interfaces."""
        # The GPU count stays an unquoted shell expansion on purpose: it must be
        # resolved on the node, not here; the default keeps single-GPU runs working.
        command = (
            "python -m vllm.entrypoints.openai.api_server"
            f" --model {shlex.quote(recipe.model)}"
            f" --host 0.0.0.0 --port {int(recipe.port)}"
            " --tensor-parallel-size ${SKYK_NUM_GPUS_PER_NODE:-1}"
        )
        flags = engine_flags(recipe.engine_args)
        return f"{command} {flags}" if flags else command
