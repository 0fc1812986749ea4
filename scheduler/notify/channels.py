"""Sending one notification: an email through the operator's SMTP relay, a webhook as a signed JSON POST.

Each function makes one attempt and raises ``DeliveryError`` (``permanent`` when trying again cannot help:
an address refused, a 4xx answer) on failure; retrying is the notifier's (``scheduler.notify.notifier``).

Webhooks are signed like GitHub's: ``X-Peach-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` with the
organisation's secret; the body carries ``sent_at`` so that a receiver can refuse old deliveries.
"""

import hashlib
import hmac
import smtplib
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from scheduler.notify.message import Notification
from scheduler.notifysettings import SmtpSettings

SIGNATURE_HEADER = "X-Peach-Signature-256"


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def send_email(
    smtp: SmtpSettings,
    password: str | None,
    sender: str,
    recipients: tuple[str, ...],
    notification: Notification,
    context: ssl.SSLContext,
) -> None:
    message = notification.email(sender, recipients)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
            if smtp.starttls:
                client.starttls(context=context)
            if smtp.username and password is not None:
                client.login(smtp.username, password)
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"SMTP refused {sorted(exc.recipients)}", permanent=True) from None
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        raise DeliveryError(f"SMTP {exc.smtp_code} {text}", permanent=exc.smtp_code >= 500) from None
    except (OSError, smtplib.SMTPException) as exc:  # refused, reset, timed out, TLS
        raise DeliveryError(f"SMTP {smtp.host}:{smtp.port}: {exc!r}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, never followed: it could lead to a host the operator did not allow."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def post_webhook(
    url: str, secret: bytes, notification: Notification, timeout: float, context: ssl.SSLContext
) -> None:
    body = notification.body()
    request = urllib.request.Request(  # noqa: S310 (https only: validated in the task's notify spec)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "peach-scheduler",
            "X-Peach-Event": notification.event.value,
            "X-Peach-Delivery": str(uuid.uuid4()),
            SIGNATURE_HEADER: signature(secret, body),
        },
    )
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
    except urllib.error.HTTPError as exc:
        retry = exc.code in (408, 425, 429) or exc.code >= 500
        raise DeliveryError(f"webhook answered {exc.code} {exc.reason}", permanent=not retry) from None
    except (OSError, ValueError) as exc:  # refused, timed out, TLS, a bad URL
        raise DeliveryError(f"webhook: {exc!r}") from None
