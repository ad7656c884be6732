"""What a test does when a tool it needs is not installed: skip here, fail under CI.

CI installs every tool the tests use (``.ci/run``, ``dev/install``), so there
a missing one is a broken set-up, not a reason to skip.
"""

from __future__ import annotations

import os
from typing import NoReturn


def missing_tool(message: str) -> NoReturn:
    """Skip the calling test (``message`` says what is missing); fail it instead when ``CI`` is set."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
