"""peach_client: the scheduler's API from a notebook or a script (``pip install peach-scheduler[client]``).

``Client`` is the typed HTTP client; ``initialize_tasks_info()`` shows the task-information view in
Jupyter (it needs ``ipywidgets``, imported only when called). Nothing here imports the service.
"""

from typing import TYPE_CHECKING, Any

from peach_client.client import (
    Client,
    Conflict,
    DurationPoint,
    LogChunk,
    NotFound,
    Organisation,
    PeachClientError,
    Run,
    Task,
    Trigger,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)

if TYPE_CHECKING:
    from peach_client.widget import TasksInfo

__all__ = [
    "Client",
    "Conflict",
    "DurationPoint",
    "LogChunk",
    "NotFound",
    "Organisation",
    "PeachClientError",
    "Run",
    "Task",
    "Trigger",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "initialize_tasks_info",
]


def initialize_tasks_info(url: str | None = None, token: str | None = None, **options: Any) -> "TasksInfo":
    """Display the task-information view (organisations, tasks, runs, durations chart, logs) and return
    it; ``url`` defaults to ``$PEACH_URL``. See ``peach_client.widget.TasksInfo`` for ``options``."""
    from peach_client.widget import show_tasks_info

    return show_tasks_info(url, token, **options)
