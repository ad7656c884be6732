"""What importing a plugin drags in: the check every contract makes to keep start-up light."""

from __future__ import annotations

import subprocess
import sys

from skyk.plugins.manager import discover


def heavy_modules_loaded(kind: str, name: str, heavy: tuple[str, ...]) -> list[str]:
    """Import plugin ``name`` of ``kind`` in a fresh interpreter; return the ``heavy`` modules it loaded.

    A module counts when it is one of ``heavy`` or inside one (``google.cloud``
    covers ``google.cloud.compute``).
    """
    module = dict(discover(kind))[name].split(":")[0]
    code = (f"import sys, importlib; importlib.import_module({module!r}); heavy = {heavy!r}; "
            "print('\\n'.join(sorted(m for m in sys.modules"
            " if any(m == h or m.startswith(h + '.') for h in heavy))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()
