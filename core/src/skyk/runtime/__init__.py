"""Inference runtimes: the interface engine plugins implement, and how a task's ``runtime:`` is applied.

- :mod:`skyk.runtime.base` — ``Runtime`` (what a plugin registers through
  ``skyk_runtimes``) and ``CommandLineRuntime``, the pip-installed,
  flag-driven shape vLLM and SGLang share.
- :mod:`skyk.runtime.flags` — the value kinds a runtime checks its flags with.
- :mod:`skyk.runtime.resolve` — fills a task's setup, run, readiness probe
  and port from its runtime, and names its queue metrics.

Standard library only, so plugins import it without pulling in pydantic.
"""

from skyk.runtime.base import CommandLineRuntime, Runtime, RuntimeRecipe
from skyk.runtime.flags import (
    Boolean,
    Choice,
    FlagKind,
    Fraction,
    Integer,
    Number,
    Text,
    TokenCount,
)

__all__ = ["Boolean", "Choice", "CommandLineRuntime", "FlagKind", "Fraction", "Integer", "Number",
           "Runtime", "RuntimeRecipe", "Text", "TokenCount"]
