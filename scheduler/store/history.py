"""A task's expected duration: the median of its last ``HISTORY`` successful runs, kept with the task by the
store and used by the ETA formula (``scheduler.runs.eta``)."""

import statistics
from collections.abc import Sequence

HISTORY = 10  # successful runs the expected duration is taken from


def expected_duration(durations: Sequence[float]) -> float | None:
    """The median of the given durations of successful runs (the last ``HISTORY``); None without any."""
    usable = [d for d in durations if d is not None and d >= 0]
    return float(statistics.median(usable)) if usable else None
