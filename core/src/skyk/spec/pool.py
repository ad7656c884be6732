"""SkyPilot's ``pool:`` section: a pool of identical workers that managed jobs run on.

A pool YAML is a task whose ``pool.workers`` says how many workers to keep
and whose ``resources``/``setup`` describe each worker; it has no ``run``
(jobs bring their own). skyk checks it and its dry run plans one worker;
it does not keep pools yet (a real launch says so).
"""

from __future__ import annotations

from pydantic import Field

from skyk.spec.base import SpecModel

#: The most workers one pool may ask for.
MAX_WORKERS = 1000


class Pool(SpecModel):
    """``pool:``: how many workers the pool keeps."""

    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
