"""How jobs share a node's accelerators: who may start while others run.

As in SkyPilot, a job asks for accelerators per node (``T4:0.5`` asks for
half a T4) and jobs whose requests fit the node together run at once, so
two ``T4:0.5`` jobs share a one-GPU node. A job that names no accelerators
takes the node to itself, as every job did before sharing: its needs are
unknown, so it neither joins running jobs nor lets others join it.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import layout

#: room for rounding when fractions add up (three 1/3 shares fill one GPU)
_SLACK = 1e-6


def job_gpus(job_id: int) -> float | None:
    """The accelerators per node job ``job_id`` asked for, or None (the whole node)."""
    try:
        gpus = layout.read_json(layout.job_dir(job_id) / "spec.json").get("gpus")
    except (OSError, ValueError, AttributeError):
        return None
    return float(gpus) if isinstance(gpus, (int, float)) and gpus > 0 else None


def fits(gpus: float | None, running: Iterable[float | None], capacity: float) -> bool:
    """Whether a job asking for ``gpus`` may start beside jobs asking for ``running``.

    A node with nothing running takes any job, even one asking for more than
    ``capacity``: a job the node cannot hold must fail by itself, not wait forever.
    """
    running = list(running)
    if not running:
        return True
    if gpus is None or None in running:
        return False
    return sum(running) + gpus <= capacity + _SLACK
