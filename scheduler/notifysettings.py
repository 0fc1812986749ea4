"""The operator's notification settings (SPEC §7), part of the configuration (``scheduler.config``).

```yaml
notifications:
  smtp: {host: smtp.example.org, port: 587, starttls: true, username: peach, password_env: SMTP_PASSWORD}
  sender: peach-scheduler@example.org      # the From of every email
  dashboard_url: https://peach.example.org/  # links in notifications (default: none)
organisations:
  chrts:
    notifications:
      email: [chrts-team@example.org]      # default recipients: tasks without their own notify.email
      webhook_hosts: [hooks.example.org]   # hosts a task's notify.webhook may name (none: no webhooks)
      webhook_secret_env: CHRTS_HOOK_SECRET  # HMAC-SHA256 key of every webhook (or webhook_secret_file)
```

Secrets only by reference (an environment variable or a file), read when a notification is sent.
"""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scheduler.durations import Seconds
from scheduler.errors import ConfigError

MAX_EMAILS = 10  # recipients of one task or organisation
# an address as mail systems take it: no display name, no spaces, one @, a dotted domain
_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)


def email_address(value: str) -> str:
    if len(value) > 254 or not _ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not an email address like team@example.org")
    return value


def _env_name(value: str) -> str:
    if not value.replace("_", "a").isalnum() or value[0].isdigit() or not value.isascii():
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


def _host(value: str) -> str:
    if not value or any(c in value for c in "/@ :") or not value.isascii():
        raise ValueError(f"{value!r} is not a host name (like hooks.example.org, or *.example.org)")
    return value.lower()


EmailAddress = Annotated[StrictStr, AfterValidator(email_address)]
EnvName = Annotated[StrictStr, AfterValidator(_env_name)]
Host = Annotated[StrictStr, AfterValidator(_host)]


def _relative(value: Path | None, info: ValidationInfo) -> Path | None:
    base = Path((info.context or {}).get("base", "."))
    return None if value is None else Path(os.path.abspath(base / value))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SmtpSettings(_Model):
    """The operator's mail relay. ``password_env`` names the variable holding the password."""

    host: StrictStr
    port: int = Field(587, ge=1, le=65535)
    starttls: StrictBool = True
    username: StrictStr | None = None
    password_env: EnvName | None = None
    timeout: Seconds = 30.0  # each SMTP conversation

    @model_validator(mode="after")
    def _password_needs_user(self) -> "SmtpSettings":
        if self.password_env and not self.username:
            raise ValueError("password_env needs a username")
        return self

    def password(self, environ: Mapping[str, str] | None = None) -> str | None:
        environ = os.environ if environ is None else environ
        if not self.password_env:
            return None
        if not environ.get(self.password_env):
            raise ConfigError(f"environment variable {self.password_env} (notifications.smtp) is not set")
        return environ[self.password_env]


class NotificationSettings(_Model):
    smtp: SmtpSettings | None = None  # None: no email is sent (counted as refused)
    sender: EmailAddress = "peach-scheduler@localhost"
    dashboard_url: StrictStr | None = None  # the dashboard's public URL, for links
    ca_file: Path | None = None  # extra trusted CAs for webhook HTTPS (the system's are trusted too)
    timeout: Seconds = 10.0  # each webhook POST
    attempts: int = Field(5, ge=1, le=20)  # per delivery, the first included
    backoff: Seconds = 30.0  # before the second attempt, doubling after each failure
    max_backoff: Seconds = 3600.0
    queue: int = Field(10000, ge=1)  # deliveries waiting at most; beyond, new ones are dropped (counted)

    _ca = field_validator("ca_file")(_relative)


class OrganisationNotifications(_Model):
    email: tuple[EmailAddress, ...] = Field((), max_length=MAX_EMAILS)  # default recipients
    webhook_hosts: tuple[Host, ...] = ()  # a leading ``*.`` allows every subdomain
    webhook_secret_env: EnvName | None = None
    webhook_secret_file: Path | None = None

    _secret_file = field_validator("webhook_secret_file")(_relative)

    @model_validator(mode="after")
    def _one_secret(self) -> "OrganisationNotifications":
        if self.webhook_secret_env and self.webhook_secret_file:
            raise ValueError("give webhook_secret_env or webhook_secret_file, not both")
        if self.webhook_hosts and not (self.webhook_secret_env or self.webhook_secret_file):
            raise ValueError(
                "webhook_hosts needs webhook_secret_env or webhook_secret_file: webhooks are signed"
            )
        return self

    def allows(self, host: str) -> bool:
        host = host.lower()
        return any(
            host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))
            for allowed in self.webhook_hosts
        )

    def secret(self, environ: Mapping[str, str] | None = None) -> bytes | None:
        """The webhook signing key, read now; None when none is configured; ConfigError when unreadable."""
        environ = os.environ if environ is None else environ
        if self.webhook_secret_env:
            if not environ.get(self.webhook_secret_env):
                raise ConfigError(
                    f"environment variable {self.webhook_secret_env} (webhook secret) is not set"
                )
            return environ[self.webhook_secret_env].encode()
        if self.webhook_secret_file:
            try:
                return self.webhook_secret_file.read_bytes().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {self.webhook_secret_file}: {exc.strerror}") from None
        return None
