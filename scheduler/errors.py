"""One root exception; specific subclasses also inherit the matching builtin.

Exit codes exist only at the CLI boundary (scheduler.cli.main).
"""

from pathlib import Path


class PeachError(Exception):
    """Root of every error peach-scheduler raises on purpose."""


class PortInUse(PeachError, OSError):
    """The HTTP port is taken by another process."""


class ConfigError(PeachError, ValueError):
    """An operator or task setting is invalid."""


class DurationError(ConfigError):
    """A duration string could not be parsed."""


class ExtractionError(PeachError, ValueError):
    """Task code could not be extracted from a notebook or script.

    ``cell`` is the 1-based notebook cell (None for a ``.py`` file); ``line`` is within the cell or file.
    """

    def __init__(
        self, message: str, path: str = "", cell: int | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.path, self.cell, self.line = message, path, cell, line

    def __str__(self) -> str:
        where = [self.path] if self.path else []
        where += [f"cell {self.cell}"] if self.cell else []
        where += [f"line {self.line}"] if self.line else []
        return ": ".join([", ".join(where), self.message]) if where else self.message


class SyncError(PeachError, RuntimeError):
    """A repository could not be brought to its remote branch head (unreachable, branch gone, refused)."""


class SyncTimeoutError(SyncError, TimeoutError):
    """A git operation on a repository took longer than its limit and was killed."""


class EnvironmentBuildError(PeachError, RuntimeError):
    """A task's Python environment could not be built (or is waiting out its backoff after a failure).

    ``details`` holds the builder's full output; ``retry_at`` the wall-clock time of the next attempt;
    ``log_path`` the run's log that says so, once an executor wrote one.
    """

    def __init__(self, message: str, details: str = "", retry_at: float | None = None) -> None:
        super().__init__(message)
        self.message, self.details, self.retry_at = message, details, retry_at
        self.log_path: Path | None = None


class ExecutionError(PeachError, RuntimeError):
    """A run could not be started or supervised (not a task failure: those are outcomes)."""


class StateError(PeachError, RuntimeError):
    """The state store refused a change (e.g. finishing a run that is not running)."""


class AlreadyRunning(StateError):
    """The task already has a RUNNING run: never two concurrent runs of one task."""


class RunNotFound(PeachError, LookupError):
    """No run has this id."""


class TaskNotFound(PeachError, LookupError):
    """No (current) task has this codops and name."""


class ManifestNotFound(PeachError, LookupError):
    """A run has no manifest (it ran before manifests were recorded, or was never prepared)."""


class RerunError(PeachError, RuntimeError):
    """A run cannot be run again: its commit is gone from the repository, or its task from the commit."""


class DiffError(PeachError, ValueError):
    """Two runs cannot be compared (they are runs of different tasks)."""


class ResourceManagerError(PeachError, ConnectionError):
    """No ResourceManager answered a YARN REST call (every address tried, retries spent), or it refused it."""
