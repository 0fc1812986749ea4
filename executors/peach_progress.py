"""Report a task's progress to peach-scheduler, from inside the task::

    import peach_progress

    for number, chunk in enumerate(chunks, 1):
        work(chunk)
        peach_progress.report(number / len(chunks), f"chunk {number} of {len(chunks)}")

All it does is print one line, ``PEACH_PROGRESS <fraction> <message>``, to standard output: the scheduler
reads that line from the run's output, records the latest one and estimates when the run ends. Any
process of the task may print the same line itself (a subprocess, another language).

This file is the whole helper. The runner script carries its source and installs it as the module
``peach_progress`` before the task's code runs, so it is importable in the task's own environment, which
has none of the scheduler's packages (``executors.runner``). It must stay standard-library only.
"""

import math
import sys
import warnings

PREFIX = "PEACH_PROGRESS"
MAX_MESSAGE = 200


def line(fraction: float, message: str = "") -> str | None:
    """The progress line for ``fraction`` (clamped to 0..1) and ``message`` (one line, at most 200
    characters); None for a fraction that is not a finite number."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    value = min(max(value, 0.0), 1.0)
    text = " ".join(str(message).split())[:MAX_MESSAGE]
    return f"{PREFIX} {value:.6g}" + (f" {text}" if text else "")


def report(fraction: float, message: str = "") -> None:
    """Say how far along the task is: ``fraction`` from 0 to 1 (out-of-range values are clamped), with an
    optional short message. Never raises: a fraction that is not a number only gives a warning."""
    text = line(fraction, message)
    if text is None:
        warnings.warn(f"peach_progress.report: {fraction!r} is not a fraction; ignored", stacklevel=2)
        return
    print(text, file=sys.stdout, flush=True)
