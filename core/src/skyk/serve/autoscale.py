"""Turning a scaling policy's per-tick wishes into a steady replica count.

A policy answers "how many replicas does this load call for?" for one
moment; load jitters, so acting on every answer would launch and tear down
replicas all day. The :class:`Autoscaler` keeps the recent answers and moves
only on a wish that has lasted: up after ``upscale_delay_seconds``, down
after ``downscale_delay_seconds``, as SkyServe does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from skyk.serve.policies import LoadSample, ScalingPolicy

if TYPE_CHECKING:
    from skyk.spec.service import ReplicaPolicy


class Autoscaler:
    """The replica count to run for one service, with hysteresis.

    Each :meth:`target` call records the policy's raw wish. The count goes
    up to N only when every wish over the last ``upscale_delay_seconds`` was
    at least N (the minimum over that window), and down to N only when every
    wish over the last ``downscale_delay_seconds`` was at most N (the
    maximum over that window); so a brief spike adds nothing and a brief lull
    removes nothing. A window counts only once the history covers it: a new
    autoscaler (a restarted controller) keeps its starting count for at least
    one delay.

    The one exception is a cold start: at a count of 0 with requests arriving
    or held at the router, it goes to 1 at once, since those requests wait
    until a replica is up.

    Not thread-safe; one controller loop owns it. Make a new one when the
    service's ``replica_policy`` changes.
    """

    def __init__(self, policy: ScalingPolicy, spec: ReplicaPolicy, current: int | None = None) -> None:
        """Scale with ``policy`` within ``spec``'s bounds and delays.

        :param current: the count to start from (clamped), usually the
            replicas running now; None takes ``current_replicas`` of the first
            sample. Either way a restarted controller changes nothing at once.
        """
        self.policy = policy
        self.spec = spec
        # (time, raw wish), oldest first. Wishes are piecewise constant: each
        # holds from its time until the next one.
        self._history: deque[tuple[float, int]] = deque()
        self._target: int | None = None if current is None else self._clamp(current)

    @property
    def current(self) -> int | None:
        """The count the last :meth:`target` returned; None before the first call."""
        return self._target

    def target(self, load: LoadSample, now: float) -> int:
        """Record the policy's wish for ``load`` and return the replica count to run.

        :param load: the service's load now.
        :param now: the time of the sample in seconds, on a clock that does
            not go back (``time.monotonic()``, or ``time.time()``); tests
            pass a fake one.
        :return: a count within ``min_replicas`` .. ``max_replicas`` (both
            ``min_replicas`` when ``max_replicas`` is not given).
        """
        wish = self.policy.desired_replicas(load, self.spec)
        target = self._clamp(load.current_replicas if self._target is None else self._target)
        if target == 0 and (load.waiting_requests > 0 or load.requests_per_second > 0):
            # Cold start: requests are held at the router until a replica is
            # up, so waiting out the upscale delay would time them out. The
            # wish is recorded as at least 1 so that the next downscale
            # window does not take the replica straight back.
            wish = max(wish, 1)
            target = self._clamp(1)
        self._record(now, wish)

        lowest = self._over(self.spec.upscale_delay_seconds, now, min)
        if lowest is not None and self._clamp(lowest) > target:
            target = self._clamp(lowest)
        highest = self._over(self.spec.downscale_delay_seconds, now, max)
        if highest is not None and self._clamp(highest) < target:
            target = self._clamp(highest)
        self._target = target
        return target

    def _clamp(self, count: int) -> int:
        return max(self.spec.min_replicas, min(self.spec.upper_replicas, count))

    def _record(self, now: float, wish: int) -> None:
        self._history.append((now, wish))
        # Keep everything inside the longer window, and the last wish before
        # it: that one still held at the window's start.
        start = now - max(self.spec.upscale_delay_seconds, self.spec.downscale_delay_seconds)
        while len(self._history) > 1 and self._history[1][0] <= start:
            self._history.popleft()

    def _over(self, delay: float, now: float, pick: Callable[[Iterable[int]], int]) -> int | None:
        """Apply ``pick`` (min or max) to the wishes held over the last ``delay`` seconds.

        None while the history does not reach back ``delay`` seconds.
        """
        start = now - delay
        wishes = []
        for at, wish in reversed(self._history):
            wishes.append(wish)
            if at <= start:
                return pick(wishes)
        return None


def scaling_policy(spec: ReplicaPolicy) -> ScalingPolicy:
    """Return the scaling policy ``spec`` names, from the installed policy plugins.

    :raise SkykError: one line naming the unknown policy, with a close match
        and the known names as the hint.
    """
    from skyk.errors import not_found
    from skyk.plugins.manager import Kernel

    name = spec.scaling_policy_name
    kernel = Kernel.load(("policy",))
    known = kernel.scaling_policies()
    if name in known:
        return known[name]
    hint = f"known scaling policies: {', '.join(sorted(known)) or 'none'}"
    # The policy may live in a plugin that is installed but broken: say which.
    broken = [f"{info.name} ({info.error})" for info in kernel.failures]
    if broken:
        hint += f"; policy plugins that failed to load: {', '.join(broken)}"
    raise not_found("scaling policy", name, sorted(known),
                    hint=hint + "; 'skyk plugins' lists the installed plugins")
