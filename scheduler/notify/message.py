"""What a notification says, and when there is one: a task's state changes (SPEC §7).

A task's notified state is the status of its last run that says something about the task: ``SUCCEEDED``,
``FAILED`` or ``TIMED_OUT`` (``KILLED`` was somebody's decision and ``LOST`` the scheduler's restart:
neither changes it). A run whose status differs from the previous such run's is an event: ``failed`` or
``timed_out`` when it failed, ``recovered`` when it succeeded after failing. A task's first run, when it
succeeds, is no event; every further failing pass in a row is none either.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import urlencode

from scheduler.spec.notifyspec import NotifyEvent
from scheduler.status import RunStatus
from scheduler.store.records import Run, iso

TELLING = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT)
_FAILING = {RunStatus.FAILED: NotifyEvent.FAILED, RunStatus.TIMED_OUT: NotifyEvent.TIMED_OUT}
_WORDS = {
    NotifyEvent.FAILED: "failed",
    NotifyEvent.TIMED_OUT: "timed out",
    NotifyEvent.RECOVERED: "recovered",
}


def event_of(previous: RunStatus | None, current: RunStatus) -> NotifyEvent | None:
    """The event ``current`` makes after ``previous`` (the last telling status before it; None: none)."""
    if current not in TELLING or current is previous:
        return None
    if current is RunStatus.SUCCEEDED:
        return NotifyEvent.RECOVERED if previous is not None else None
    return _FAILING[current]


@dataclass(frozen=True)
class Notification:
    event: NotifyEvent
    run: Run
    dashboard_url: str | None  # the dashboard's public base URL, when the operator gave it

    @property
    def error_line(self) -> str | None:
        """The run's error in one line: the last line of its error (a traceback's exception), else its
        outcome."""
        lines = [line.strip() for line in (self.run.error or "").splitlines() if line.strip()]
        return lines[-1] if lines else self.run.outcome

    @property
    def link(self) -> str | None:
        if not self.dashboard_url:
            return None
        query = urlencode({"codops": self.run.codops, "task": self.run.task})
        return f"{self.dashboard_url.rstrip('/')}/?{query}"

    @property
    def subject(self) -> str:
        return f"[peach] {self.run.codops}/{self.run.task} {_WORDS[self.event]}"

    def payload(self, sent_at: datetime | None = None) -> dict[str, Any]:
        """The webhook's JSON body."""
        run = self.run
        return {
            "event": self.event.value,
            "codops": run.codops,
            "task": run.task,
            "run_id": run.id,
            "status": run.status.value,
            "error": self.error_line if self.event is not NotifyEvent.RECOVERED else None,
            "outcome": run.outcome,
            "version": run.version,
            "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at),
            "duration_seconds": run.duration_seconds,
            "dashboard_url": self.link,
            "sent_at": iso(sent_at or datetime.now(UTC)),
        }

    def body(self) -> bytes:
        return json.dumps(self.payload(), sort_keys=True).encode()

    def email(self, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
        run = self.run
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = self.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
        duration = f"{run.duration_seconds:.1f} s" if run.duration_seconds is not None else "-"
        lines = [
            f"Task {run.codops}/{run.task} {_WORDS[self.event]}.",
            "",
            f"run:      {run.id}",
            f"status:   {run.status.value}",
            f"version:  {run.short_version or '-'}",
            f"started:  {iso(run.started_at) or '-'}",
            f"duration: {duration}",
            f"outcome:  {run.outcome or '-'}",
        ]
        if self.event is not NotifyEvent.RECOVERED and self.error_line:
            lines.append(f"error:    {self.error_line}")
        if self.link:
            lines += ["", f"dashboard: {self.link}"]
        message.set_content("\n".join(lines) + "\n")
        return message
