"""How long a run has left, and how long a loop's pass is expected to take: the one place of the formula.

Inputs: the task's **expected duration** ``H``, the median duration of its last ``HISTORY`` successful runs
(kept on the task, updated whenever a run succeeds); the run's **elapsed** time ``t``; and the latest
**progress** ``f`` (0..1) it reported, if any.

- From progress alone, the run's total is ``P = t / f`` (the pace so far, kept up): used once
  ``f >= MIN_FRACTION``; below that, a tiny fraction would give an absurd total.
- The two are blended by how far the run is: ``total = f * P + (1 - f) * H``, so history leads at the
  start and the task's own pace takes over as it nears the end.
- History is only trusted while ``t <= H``. Past that the run is **overdue** (slower than usual): the
  total is ``P`` when there is progress, otherwise unknown.
- ``f == 1``: the task says it is done and is finishing up; nothing is left to estimate (0 s).
- ``remaining = total - t``. It is never negative (``P >= t`` and, while trusted, ``H >= t``), and never
  past the run's deadline: the run is killed there.

A loop's **expected pass** is the sum of the expected durations of its enabled tasks (tasks without any
success yet count for nothing and are counted apart; tasks with ``every`` may not run in every pass, so
it is an upper bound for them).
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.models import RunStatus
from scheduler.records import Run, iso

HISTORY = 10  # successful runs the expected duration is taken from
MIN_FRACTION = 0.01  # below 1 %, progress does not move the estimate


def expected_duration(durations: Sequence[float]) -> float | None:
    """The median of the given durations of successful runs (the last ``HISTORY``); None without any."""
    usable = [d for d in durations if d is not None and d >= 0]
    return float(statistics.median(usable)) if usable else None


@dataclass(frozen=True)
class Estimate:
    """``total_seconds`` the run is now expected to take, ``remaining_seconds`` of it (None: unknown), and
    whether it runs longer than its history says (``overdue``)."""

    total_seconds: float | None
    remaining_seconds: float | None
    overdue: bool


def estimate(
    elapsed: float,
    expected: float | None,
    fraction: float | None = None,
    limit: float | None = None,
) -> Estimate:
    """The estimate for a run ``elapsed`` seconds in, with the task's ``expected`` duration, the run's
    latest progress ``fraction`` and the seconds ``limit`` until its deadline (all optional)."""
    elapsed = max(elapsed, 0.0)
    overdue = expected is not None and elapsed > expected
    history = expected if expected is not None and not overdue else None
    if fraction is not None and fraction >= 1.0:
        return Estimate(elapsed, 0.0, overdue)
    total = history
    if fraction is not None and fraction >= MIN_FRACTION:
        pace = elapsed / fraction
        total = pace if history is None else fraction * pace + (1 - fraction) * history
    if total is None:
        return Estimate(None, None, overdue)
    remaining = max(total - elapsed, 0.0)
    if limit is not None:
        remaining = min(remaining, max(limit, 0.0))
    return Estimate(elapsed + remaining, remaining, overdue)


def eta_fields(run: Run, expected: float | None, now: datetime) -> dict[str, Any]:
    """The estimate fields of a run object (API, CLI): ``expected_seconds`` (the task's expected
    duration), ``eta_seconds`` (left), ``eta_at`` (when it should end), ``overdue``; for a RUNNING run
    only, null (and false) for any other."""
    if run.status is not RunStatus.RUNNING:
        return {"expected_seconds": None, "eta_seconds": None, "eta_at": None, "overdue": False}
    limit = (run.deadline - now).total_seconds() if run.deadline is not None else None
    found = estimate((now - run.started_at).total_seconds(), expected, run.progress, limit)
    left = found.remaining_seconds
    return {
        "expected_seconds": expected,
        "eta_seconds": None if left is None else round(left, 1),
        "eta_at": None if left is None else iso(now + timedelta(seconds=left)),
        "overdue": found.overdue,
    }
