"""A task's ``notify`` block (SPEC §7): who is told when the task starts failing, and when it recovers.

```yaml
notify:
  on: [failed, timed_out, recovered]    # default: all three
  email: [team@example.org]             # at most MAX_EMAILS addresses
  webhook: https://hooks.example.org/peach   # https only; its host must be allowed by the operator
```

Validated here like every task key (unknown keys by name); whether the webhook's host is allowed is the
operator's call, checked when a notification is sent (``scheduler.notify``).
"""

from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, field_validator

from scheduler.notifysettings import MAX_EMAILS, EmailAddress


class NotifyEvent(StrEnum):
    """A change of a task's state worth telling: its first failure (or timeout) after a success, and
    its first success after failing."""

    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RECOVERED = "recovered"


def webhook_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    if parts.scheme != "https" or not host:
        raise ValueError(f"webhook {value!r} must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("webhook URLs must not carry credentials; the operator signs every webhook")
    return value


WebhookUrl = Annotated[StrictStr, AfterValidator(webhook_url)]


class NotifySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    on: tuple[NotifyEvent, ...] = (NotifyEvent.FAILED, NotifyEvent.TIMED_OUT, NotifyEvent.RECOVERED)
    email: tuple[EmailAddress, ...] = Field((), max_length=MAX_EMAILS)
    webhook: WebhookUrl | None = None

    @field_validator("on")
    @classmethod
    def _some_event(cls, value: tuple[NotifyEvent, ...]) -> tuple[NotifyEvent, ...]:
        if not value:
            raise ValueError("give at least one of failed, timed_out, recovered (or leave notify out)")
        return tuple(dict.fromkeys(value))


NOTIFY_KEYS = tuple(NotifySpec.model_fields)
