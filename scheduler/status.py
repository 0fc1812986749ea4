"""The one run-status enum: what the store records, executors report and every surface shows (SPEC §4.8)."""

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's status; every status but ``RUNNING`` is final."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    KILLED = "KILLED"
    LOST = "LOST"

    @property
    def final(self) -> bool:
        return self is not RunStatus.RUNNING
