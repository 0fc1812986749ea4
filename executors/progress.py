"""Progress a run reports: ``PEACH_PROGRESS <fraction 0..1> [message]`` lines in its output.

A task prints the line itself or through the helper its runner installs (``executors.peach_progress``).
The python executor and spark in local/client mode see the line in the child's output stream (spark-submit
passes the driver's standard output through); ``ProgressScanner`` reads it there, on the log pump's thread,
next to the log. On YARN in cluster mode the driver's output is not local: the ResourceManager's reported
application ``progress`` is used instead (``executors.yarn.execution``).

Only the latest valid line matters. A line that starts with the prefix but does not hold a finite number
from 0 to 1 is ignored; the first such line gets one warning in the run's log, later ones none. The
scanner's cost is one substring search per chunk of output that has no progress line in it, so a task
that prints a lot pays nearly nothing, and one that prints a flood of progress lines only moves
``latest``: writing it to the state store is throttled by the supervisor (``scheduler.runs.supervise``).
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from executors.peach_progress import MAX_MESSAGE, PREFIX

MAX_LINE = 1024  # a longer line is cut here before it is parsed (the message is at most 200 characters)
_PREFIX = PREFIX.encode()
_LINE = re.compile(rb"^[ \t]*" + _PREFIX + rb"(?=[ \t\r]|$)([^\n]*)$", re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Progress:
    """How far a run is: ``fraction`` from 0 to 1, the task's message, and when it said so (epoch s)."""

    fraction: float
    message: str | None
    at: float


def parse(rest: bytes) -> tuple[float, str | None] | None:
    """(fraction, message) from what follows the prefix on a progress line; None if it is not valid."""
    parts = rest.strip().split(None, 1)
    if not parts:
        return None
    try:
        fraction = float(parts[0])
    except ValueError:
        return None
    if not math.isfinite(fraction) or not 0.0 <= fraction <= 1.0:
        return None
    message = parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""
    message = " ".join(_CONTROL.sub(" ", message).split())[:MAX_MESSAGE]
    return fraction, message or None


class ProgressScanner:
    """Finds progress lines in a run's raw output, chunk by chunk (lines may span chunks).

    ``report`` gets every valid progress (the latest wins); ``warn`` gets one message for the first invalid
    progress line. ``clock`` is wall time (epoch seconds). Used by one thread.
    """

    def __init__(
        self,
        report: Callable[[Progress], None],
        warn: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self._report, self._warn, self._clock = report, warn, clock
        self._partial = b""
        self._warned = False

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        end = data.rfind(b"\n")
        complete, self._partial = (b"", data) if end < 0 else (data[:end], data[end + 1 :])
        self._partial = self._partial[:MAX_LINE]
        if complete and _PREFIX in complete:
            self._scan(complete)

    def close(self) -> None:
        """The output ended: a last line without a newline counts too."""
        partial, self._partial = self._partial, b""
        if _PREFIX in partial:
            self._scan(partial)

    def _scan(self, text: bytes) -> None:
        latest = None
        for match in _LINE.finditer(text):
            rest = match.group(1)[:MAX_LINE]
            parsed = parse(rest)
            if parsed is not None:
                latest = parsed
            elif not self._warned:
                self._warned = True
                shown = (_PREFIX + rest).decode("utf-8", "replace").strip()[:120]
                self._warn(
                    f"ignored an invalid progress line {shown!r}: expected '{PREFIX} <fraction from 0 to 1> "
                    "[message]'; further invalid progress lines are ignored without a warning"
                )
        if latest is not None:
            self._report(Progress(latest[0], latest[1], self._clock()))
