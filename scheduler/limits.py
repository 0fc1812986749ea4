"""How long a run may take: the loops' limits (operator configuration) and the task's own ``timeout``.

The one place that chooses a run's time limit; validation checks a task's ``timeout`` against the same
numbers.
"""

from dataclasses import dataclass

from scheduler.names import METADATA_LOOP


@dataclass(frozen=True)
class LoopLimits:
    """The longest a run may take in each kind of loop: the one place that chooses a run's time limit."""

    codops: float = 3600.0
    metadata: float = 300.0

    def of_loop(self, loop: str) -> float:
        return self.metadata if loop == METADATA_LOOP else self.codops

    def for_run(self, loop: str, timeout: float | None) -> float:
        """A run's limit: the task's own ``timeout`` (validated to be at most its loop's) or its loop's."""
        limit = self.of_loop(loop)
        return min(timeout or limit, limit)
