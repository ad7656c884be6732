"""The SGLang runtime: how to install SGLang on a node and start its server."""

from __future__ import annotations

import shlex

from skyk.runtime import Runtime, RuntimeRecipe, engine_flags

#: What ``pip install`` is given on the node. The ``all`` extra brings the
#: serving dependencies; without it ``sglang.launch_server`` cannot start.
PACKAGE_SPEC = "sglang[all]"


class SGLangRuntime(Runtime):
    """Serve a model with SGLang's OpenAI-compatible server.

    Tensor parallelism is read from ``$SKYK_NUM_GPUS_PER_NODE`` when the command
    runs, so one command fits whichever accelerator count the optimizer chose.
    """

    name = "sglang"
    readiness_path = "/health"
    queue_length_metric = "sglang:num_queue_reqs"

    def setup_command(self, recipe: RuntimeRecipe) -> str:
        """Return the ``pip install`` command that puts SGLang on the node."""
        # Quoted because the brackets of the extra are a glob pattern to the shell.
        return f"pip install {shlex.quote(PACKAGE_SPEC)}"

    def serve_command(self, recipe: RuntimeRecipe) -> str:
        """Return the command that serves ``recipe.model`` on ``recipe.port``, all interfaces."""
        # The GPU count stays an unquoted shell expansion on purpose: it must be
        # resolved on the node, not here; the default keeps single-GPU runs working.
        command = (
            "python -m sglang.launch_server"
            f" --model-path {shlex.quote(recipe.model)}"
            f" --host 0.0.0.0 --port {int(recipe.port)}"
            " --tp ${SKYK_NUM_GPUS_PER_NODE:-1}"
        )
        flags = engine_flags(recipe.engine_args)
        return f"{command} {flags}" if flags else command
