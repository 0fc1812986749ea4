"""Notifications through the running service: a real task failing pass after pass and recovering, a real
SMTP server (aiosmtpd) and a real HTTPS receiver on loopback; a mail relay that hangs delays nothing."""

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.orgs import org_repo, write_config
from tests.helpers.receivers import https_receiver, silent_smtp_server, smtp_server

FLAKY = """\
def main(switch):
    with open(switch) as state:
        if state.read().strip() == "fail":
            raise RuntimeError("the upstream table is empty")
    print("fine")
"""
SECRET = "s3cret-hook-key"


def configure(tmp: Path, smtp_port: int, hook_port: int, **smtp: Any) -> tuple[Service, Path]:
    switch = tmp / "switch"
    switch.write_text("fail")
    notify = {
        "on": ["failed", "timed_out", "recovered"],
        "email": ["authors@example.org"],
        "webhook": f"https://localhost:{hook_port}/peach",
    }
    repo = org_repo(tmp, "alpha", {"flaky": (FLAKY, {"args": {"switch": str(switch)}, "notify": notify})})
    path = write_config(tmp, {"alpha": repo})
    config = yaml.safe_load(path.read_text())
    config["notifications"] = {
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "starttls": False, **smtp},
        "sender": "peach@example.org",
        "dashboard_url": "https://peach.example.org/",
        "ca_file": str(tmp / "ca.pem"),
        "backoff": "0.2s",
    }
    config["organisations"]["alpha"]["notifications"] = {
        "webhook_hosts": ["localhost"],
        "webhook_secret_env": "ALPHA_HOOK_SECRET",
    }
    path.write_text(yaml.safe_dump(config))
    return Service(load_config(path), environ={"ALPHA_HOOK_SECRET": SECRET}), switch


@pytest.fixture
def stopping() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.request_force_stop()
        service.wait_stopped(30)
        service.close()


def finished(service: Service, status: RunStatus) -> int:
    return len(service.store.list_runs(codops="alpha", task="flaky", status=status, limit=500))


def results(service: Service, channel: str) -> dict[str, float]:
    return {
        labels["result"]: value
        for name, labels, value in service.metrics.series()
        if name == "peach_notifications_total" and labels["channel"] == channel
    }


def considered_all(service: Service) -> bool:
    runs = service.store.list_runs(codops="alpha", task="flaky", limit=500)
    return service.notifier.considered >= len([r for r in runs if r.status.final])


@pytest.mark.timeout(180)
def test_one_email_and_one_webhook_per_state_change(tmp_path: Path, stopping: list[Service]) -> None:
    with smtp_server() as (smtp_port, mailbox), https_receiver(tmp_path / "ca.pem") as (hook_port, hooks):
        service, switch = configure(tmp_path, smtp_port, hook_port)
        stopping.append(service)
        service.start()
        wait_for(lambda: finished(service, RunStatus.FAILED) >= 3, 120, "three failing passes")
        wait_for(lambda: considered_all(service) and service.notifier.pending == 0, 30, "the notifier")
        assert len(mailbox.messages) == 1 and len(hooks) == 1  # the first failure only

        email = mailbox.messages[0]
        assert email["Subject"] == "[peach] alpha/flaky failed" and email["From"] == "peach@example.org"
        assert mailbox.envelopes[0] == ["authors@example.org"]
        text = email.get_payload(decode=True).decode()
        assert "RuntimeError: the upstream table is empty" in text
        assert "https://peach.example.org/?codops=alpha&task=flaky" in text

        hook = hooks[0]
        expected = "sha256=" + hmac.new(SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(hook.headers["x-peach-signature-256"], expected)
        first = service.store.list_runs(codops="alpha", task="flaky", status=RunStatus.FAILED, limit=500)[-1]
        assert hook.payload["event"] == "failed" and hook.payload["run_id"] == first.id
        assert hook.payload["task"] == "flaky" and hook.payload["status"] == "FAILED"
        assert hook.payload["error"] == "RuntimeError: the upstream table is empty"
        assert hook.payload["dashboard_url"] == "https://peach.example.org/?codops=alpha&task=flaky"
        assert (
            hook.headers["x-peach-event"] == "failed" and hook.headers["content-type"] == "application/json"
        )

        switch.write_text("ok")
        wait_for(lambda: finished(service, RunStatus.SUCCEEDED) >= 3, 120, "three succeeding passes")
        wait_for(lambda: considered_all(service) and service.notifier.pending == 0, 30, "the notifier")
        assert [m["Subject"] for m in mailbox.messages] == [
            "[peach] alpha/flaky failed",
            "[peach] alpha/flaky recovered",
        ]
        assert [h.payload["event"] for h in hooks] == ["failed", "recovered"]
        assert hooks[1].payload["error"] is None and hooks[1].payload["status"] == "SUCCEEDED"
        assert results(service, "email") == {"sent": 2.0} and results(service, "webhook") == {"sent": 2.0}


@pytest.mark.timeout(180)
def test_a_hung_mail_relay_delays_nothing(tmp_path: Path, stopping: list[Service]) -> None:
    with silent_smtp_server() as smtp_port, https_receiver(tmp_path / "ca.pem") as (hook_port, hooks):
        service, _ = configure(tmp_path, smtp_port, hook_port, timeout="120s")
        stopping.append(service)
        service.start()
        wait_for(lambda: hooks, 60, "the webhook of the first failure")
        ran = finished(service, RunStatus.FAILED)
        wait_for(lambda: finished(service, RunStatus.FAILED) >= ran + 3, 60, "three more passes")
        assert results(service, "email") == {}  # its first attempt still waits for the relay's greeting
        assert results(service, "webhook") == {"sent": 1.0}


@pytest.mark.timeout(180)
def test_a_failed_attempt_is_retried_with_backoff_and_counted(
    tmp_path: Path, stopping: list[Service]
) -> None:
    with smtp_server() as (smtp_port, mailbox), https_receiver(tmp_path / "ca.pem") as (hook_port, _):
        mailbox.refuse = ["451 4.3.0 try again later", "451 4.3.0 try again later"]
        service, _ = configure(tmp_path, smtp_port, hook_port)
        stopping.append(service)
        service.start()
        wait_for(lambda: mailbox.messages, 60, "the email, at its third attempt")
        assert len(mailbox.messages) == 1
        assert results(service, "email") == {"retried": 2.0, "sent": 1.0}
