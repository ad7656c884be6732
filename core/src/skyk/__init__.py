"""skyk: run AI workloads on the cheapest cloud that has the GPUs.

Importing this package stays cheap on purpose: the CLI imports it to print
status, so nothing here may pull in a cloud SDK, pydantic or a web framework.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Plugins write ``@skyk.hookimpl``; resolved lazily so ``import skyk``
    # does not load pluggy for commands that never touch plugins.
    if name == "hookimpl":
        from skyk.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'skyk' has no attribute {name!r}")
