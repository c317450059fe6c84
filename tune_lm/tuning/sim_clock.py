"""A virtual clock for replayed searches: results reach Tune in recorded-time order.

Sleeping each recorded epoch's seconds divided by a speed keeps the real order only while
those sleeps are long against what Ray itself takes (a trial's start, a result's round
trip through the driver); at high speeds Ray's own delays decide which rung fills
first, and the replay stops being the search it rehearses (measured: issue 16's notes).

Here no trial sleeps. Each replayed trial, before reporting an epoch, posts "my next
result is due ``seconds`` from now" to :class:`VirtualClock` and waits. The driver
(:class:`ClockKeeper`, a Tune callback) lets the earliest posted result through only when
the search is *settled*: no trial waiting to start, every running trial waiting on the
clock (so none of them can still post an earlier time), and every slot filled (or every
trial of the search created; or, as a safeguard, nothing changed for seconds with a slot
empty). Then the clock jumps to
that result's time. One result is in flight at a time; Tune's scheduler decides on it
before anything later can happen, exactly as it would on a real timeline where ties are
rare. A trial that starts does so at the virtual time its slot was freed.

The replay thus costs Ray's bookkeeping per result (tens of milliseconds) instead of
recorded seconds / speed, and its event order does not depend on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import ray
from ray import tune

# A safeguard: nothing changed for this long with a slot empty although the search has
# trials left to create; take it that the searcher has nothing to propose now, and go on.
QUIET_S = 3.0
# A settled search waits this long for its running trials to post before the step goes on.
SETTLE_S = 0.05
# Nothing released for this long although trials wait: something is stuck (a trial that
# never posts); release anyway rather than hang, and say so.
STUCK_S = 60.0


@ray.remote(num_cpus=0)
class VirtualClock:
    """The replay's clock: trials wait on it, the driver advances it (an async actor)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: dict[str, tuple[float, int, asyncio.Future]] = {}
        self.order = itertools.count()
        self.posted = asyncio.Event()

    async def wait(self, trial_id: str, seconds: float) -> bool:
        """Block until the clock reaches now + ``seconds``; False: the trial was dropped."""
        future = asyncio.get_running_loop().create_future()
        self.waits[trial_id] = (self.now + seconds, next(self.order), future)
        self.posted.set()
        return await future

    async def settle(self, running: list[str], timeout: float) -> bool:
        """Wait up to ``timeout`` s until every trial in ``running`` is waiting here."""
        deadline = time.monotonic() + timeout
        while not all(trial in self.waits for trial in running):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.posted.clear()
            try:
                await asyncio.wait_for(self.posted.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    async def release(self, keep: list[str]) -> str | None:
        """Drop the waits of trials not in ``keep`` (stopped ones), then let the earliest
        waiting result through; its trial id (None: nobody waits)."""
        for trial in [t for t in self.waits if t not in keep]:
            self.waits.pop(trial)[2].set_result(False)
        if not self.waits:
            return None
        trial = min(self.waits, key=lambda t: self.waits[t][:2])
        due, _, future = self.waits.pop(trial)
        self.now = max(self.now, due)
        future.set_result(True)
        return trial

    async def time(self) -> float:
        return self.now


class ClockKeeper(tune.Callback):
    """The driver's side: advance the clock whenever the search is settled."""

    def __init__(self, clock: Any, slots: int, total_trials: int) -> None:
        self.clock, self.slots, self.total_trials = clock, slots, total_trials
        self.last_seen: tuple = ()
        self.changed_at = time.monotonic()
        self.released_at = time.monotonic()
        self.in_flight: str | None = None  # released; its result not yet taken by Tune

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:  # fmt: skip
        if trial.trial_id == self.in_flight:
            self.in_flight = None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._maybe_advance(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._maybe_advance(trials)

    def _maybe_advance(self, trials: list) -> None:
        now = time.monotonic()
        running = [t.trial_id for t in trials if t.status == "RUNNING"]
        seen = (tuple(running), sum(1 for t in trials if t.status == "PENDING"), len(trials))
        if seen != self.last_seen:
            self.last_seen, self.changed_at = seen, now
        if not running or self.in_flight in running and now - self.released_at < STUCK_S:
            return  # nothing to advance, or the last result released is on its way
        stuck = now - self.released_at > STUCK_S
        if not stuck:
            if seen[1]:  # a trial is about to start: it must post its first epoch first
                return
            if (len(running) < self.slots and len(trials) < self.total_trials
                    and now - self.changed_at < QUIET_S):
                return  # the searcher will fill the free slot
            if not ray.get(self.clock.settle.remote(running, SETTLE_S)):
                return
        self.in_flight = ray.get(self.clock.release.remote(running))
        if self.in_flight is not None:
            self.released_at = now
            if stuck:
                logging.getLogger(__name__).warning(
                    "replay: no result was due for %.0f s; released the earliest waiting "
                    "one anyway (a trial may never have posted)", STUCK_S)  # fmt: skip


def make_clock(slots: int, total_trials: int) -> tuple[Any, ClockKeeper]:
    """A fresh clock and the callback that keeps it, for one replayed search of
    ``total_trials`` trials at most, ``slots`` at a time."""
    clock = VirtualClock.remote()
    return clock, ClockKeeper(clock, slots, total_trials)
