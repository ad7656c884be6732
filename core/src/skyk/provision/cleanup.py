"""Removing what a failed provisioning attempt made before its failure is reported.

A plugin wraps everything after its first create in :func:`removed_on_failure`:
whatever fails in it (an error of the cloud, an interrupt), what the attempt
made is removed first, so failover moves on with nothing left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from skyk.provision.types import ProvisionError


@contextlib.contextmanager
def removed_on_failure(uid: str, remove: Callable[[], None],
                       classify: Callable[[BaseException], BaseException],
                       reason: Callable[[Exception], str]) -> Iterator[None]:
    """On any failure inside, call ``remove()``, then raise ``classify(failure)``.

    ``classify`` turns the cloud's errors into ``ProvisionError`` s (and returns
    anything else as it is); ``reason`` is one line about a cleanup that failed
    too. Then the attempt is kept as unsettled (a ``timeout`` error), so
    ``status -r`` shows what it left and ``down`` retries.
    """
    try:
        yield
    except BaseException as exc:
        failure = classify(exc)
        try:
            remove()
        except Exception as cleanup:  # noqa: BLE001 - reported with the failure
            why = cleanup.reason if isinstance(cleanup, ProvisionError) else reason(cleanup)
            first = failure.reason if isinstance(failure, ProvisionError) else str(failure)
            raise ProvisionError("timeout", "region", f"{first}; then could not remove what"
                                 f" attempt {uid} made: {why}") from exc
        if failure is exc:
            raise
        raise failure from exc
