"""Hook implementations of the SGLang runtime plugin."""

from __future__ import annotations

from skyk.hookspecs import hookimpl

from skyk_sglang.runtime import SGLangRuntime


@hookimpl
def skyk_runtimes():
    """Provide the ``sglang`` runtime."""
    return [SGLangRuntime()]
