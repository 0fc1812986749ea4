"""The rules of notifications without a service: which runs are events, what task authors and operators may
write (errors naming the file, line and key), and what the notifier refuses or gives up, against a real
state database, a real SMTP server and a real HTTPS receiver."""

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scheduler.config import load_config
from scheduler.errors import ConfigError
from scheduler.metrics import Metrics
from scheduler.notify.message import event_of
from scheduler.notify.notifier import Notifier
from scheduler.notifysettings import NotificationSettings, OrganisationNotifications
from scheduler.spec.definitions import load_definitions
from scheduler.spec.notifyspec import NotifyEvent, NotifySpec
from scheduler.status import RunStatus
from scheduler.store.store import Store
from tests.helpers.backends import wait_for
from tests.helpers.receivers import https_receiver, smtp_server

S, F, T, K, L = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.KILLED, RunStatus.LOST)


@pytest.mark.parametrize(
    ("previous", "current", "event"),
    [
        (None, S, None),  # a first success is no news
        (None, F, NotifyEvent.FAILED),
        (S, F, NotifyEvent.FAILED),
        (F, F, None),  # failing again: already told
        (F, T, NotifyEvent.TIMED_OUT),
        (T, S, NotifyEvent.RECOVERED),
        (F, S, NotifyEvent.RECOVERED),
        (S, S, None),
        (F, K, None),  # killed or lost runs say nothing about the task
        (S, L, None),
    ],
)
def test_events_are_state_changes(previous: RunStatus | None, current: RunStatus, event: NotifyEvent) -> None:
    assert event_of(previous, current) is event


def definitions(tmp_path: Path, notify: str) -> list[str]:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "t.py").write_text("def main():\n    pass\n")
    body = "codops: alpha\ntasks:\n  t:\n    notebook: code/t.py\n    method: main\n    notify:\n"
    (tmp_path / "peach.yaml").write_text(body + textwrap.indent(notify, "      "))
    return [str(problem) for problem in load_definitions(tmp_path).problems]


@pytest.mark.parametrize(
    ("notify", "problem"),
    [
        (
            "on: [failed]\nemail: [not-an-address]\n",
            "peach.yaml:8: task 't': notify.email.0: 'not-an-address'",
        ),
        (
            "webhook: http://hooks.example.org/x\n",
            "notify.webhook: webhook 'http://hooks.example.org/x' must be",
        ),
        ("webhook: https://u:pw@hooks.example.org/x\n", "must not carry credentials"),
        (
            "email: [" + ", ".join(["a@example.org"] * 11) + "]\n",
            "notify.email: Tuple should have at most 10",
        ),
        ("on: [failing]\n", "notify.on.0"),
        ("on: []\n", "give at least one of failed, timed_out, recovered"),
        ("emails: [a@example.org]\n", "unknown notify key 'emails' (did you mean 'email'?)"),
    ],
)
def test_task_notify_is_validated(tmp_path: Path, notify: str, problem: str) -> None:
    found = definitions(tmp_path, notify)
    assert len(found) == 1 and problem in found[0], found


def test_a_valid_notify_block(tmp_path: Path) -> None:
    assert definitions(tmp_path, "on: [failed, recovered]\nemail: [team@example.org]\n") == []
    spec = load_definitions(tmp_path).tasks[0].definition.notify
    assert spec == NotifySpec(on=(NotifyEvent.FAILED, NotifyEvent.RECOVERED), email=("team@example.org",))


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            "notifications:\n  smtp: {host: mail, password_env: P}\n",
            "notifications.smtp: password_env needs a username",
        ),
        ("notifications:\n  sender: nobody\n", "notifications.sender: 'nobody' is not an email address"),
        ("notifications:\n  smtp: {host: mail, prot: 25}\n", "unknown key 'prot' (did you mean 'port'?)"),
        (
            "organisations:\n  alpha:\n    notifications:\n      webhook_hosts: [hooks.example.org]\n",
            "alpha.notifications: webhook_hosts needs webhook_secret_env or webhook_secret_file",
        ),
        (
            "organisations:\n  alpha:\n    notifications:\n      webhook_hosts: [https://x]\n"
            "      webhook_secret_env: S\n",
            "is not a host name",
        ),
    ],
)
def test_operator_settings_are_validated(tmp_path: Path, section: str, problem: str) -> None:
    path = tmp_path / "peach.yaml"
    path.write_text(section)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert problem in str(error.value) and f"{path}:" in str(error.value)


def test_operator_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "peach.yaml"
    path.write_text(
        "notifications:\n  smtp: {host: mail.example.org, username: peach, password_env: SMTP_PW}\n"
        "  ca_file: ca.pem\norganisations:\n  alpha:\n    notifications:\n"
        "      email: [team@example.org]\n      webhook_hosts: ['*.example.org']\n"
        "      webhook_secret_file: hook.key\n"
    )
    config = load_config(path, environ={})
    assert config.notifications.smtp and config.notifications.smtp.port == 587
    assert config.notifications.ca_file == tmp_path / "ca.pem"
    alpha = config.organisations["alpha"].notifications
    assert alpha.allows("hooks.example.org") and not alpha.allows("example.org.evil.net")
    assert alpha.webhook_secret_file == tmp_path / "hook.key"
    shown = yaml.safe_load(config.show())["notifications"]
    assert shown["smtp"]["password_env"] == "SMTP_PW" and shown["smtp"]["timeout"] == "30s"
    assert (shown["backoff"], shown["max_backoff"]) == ("30s", "1h")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store.from_url(f"sqlite:///{tmp_path / 'state.db'}")
    yield made
    made.close()


def fail_once(store: Store, task: str = "t") -> None:
    run = store.start_run("alpha", task, loop="alpha", executor="python", version="abc")
    return store.finish_run(run.id, RunStatus.FAILED, "exit code 1", error="ValueError: bad")  # type: ignore[return-value]


def counted(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (labels["channel"], labels["result"]): value
        for name, labels, value in metrics.series()
        if name == "peach_notifications_total"
    }


def test_refusals_and_permanent_failures(tmp_path: Path, store: Store) -> None:
    """A webhook host the organisation does not allow and email without SMTP are refused; an address the
    relay refuses and a 4xx answer are given up at once (no retry); all counted."""
    answers = [404]
    with smtp_server() as (port, mailbox), https_receiver(tmp_path / "ca.pem", answers) as (hook_port, hooks):
        mailbox.refuse = ["550 5.1.1 no such mailbox"]
        settings = NotificationSettings.model_validate(
            {
                "smtp": {"host": "127.0.0.1", "port": port, "starttls": False},
                "ca_file": str(tmp_path / "ca.pem"),
            }
        )
        org = OrganisationNotifications(webhook_hosts=("localhost",), webhook_secret_env="K")
        metrics = Metrics()
        notifier = Notifier(settings, {"alpha": org}, store, metrics, {"K": "key"})
        notifier.start()
        try:
            not_allowed = NotifySpec(webhook="https://elsewhere.example.org/x", email=("a@example.org",))
            notifier.run_finished(fail_once(store), not_allowed)
            wait_for(lambda: notifier.considered == 1 and notifier.pending == 0, 30, "the first run")
            assert counted(metrics) == {("webhook", "refused"): 1.0, ("email", "failed"): 1.0}
            assert mailbox.messages == [] and hooks == []

            missing = NotifySpec(webhook=f"https://localhost:{hook_port}/nowhere")
            notifier.run_finished(fail_once(store, "u"), missing)
            wait_for(lambda: notifier.considered == 2 and notifier.pending == 0, 30, "the second run")
            assert len(hooks) == 1 and answers == []  # one attempt, answered 404: not retried
            assert counted(metrics)[("webhook", "failed")] == 1.0
            assert ("webhook", "retried") not in counted(metrics)
        finally:
            notifier.stop()
    without_smtp = Notifier(
        NotificationSettings(),
        {"alpha": OrganisationNotifications(email=("t@example.org",))},
        store,
        metrics := Metrics(),
        {},
    )
    without_smtp.start()
    try:
        without_smtp.run_finished(fail_once(store, "v"), None)  # the organisation's default recipients
        wait_for(lambda: without_smtp.considered == 1, 30, "the run")
        assert counted(metrics) == {("email", "refused"): 1.0}
    finally:
        without_smtp.stop()


def test_email_over_starttls_with_login(tmp_path: Path, store: Store) -> None:
    """The relay as operators have it: STARTTLS required (its CA in ``notifications.ca_file``) and a login
    whose password comes from the environment variable ``smtp.password_env`` names."""
    with smtp_server(tmp_path / "ca.pem", login=("peach", "pw-from-env")) as (port, mailbox):
        smtp = {"host": "localhost", "port": port, "username": "peach", "password_env": "SMTP_PW"}
        settings = NotificationSettings.model_validate({"smtp": smtp, "ca_file": str(tmp_path / "ca.pem")})
        org = OrganisationNotifications(email=("team@example.org",))
        metrics = Metrics()
        notifier = Notifier(settings, {"alpha": org}, store, metrics, {"SMTP_PW": "pw-from-env"})
        notifier.start()
        try:
            notifier.run_finished(fail_once(store), None)
            wait_for(lambda: mailbox.messages, 30, "the email")
            assert mailbox.envelopes == [["team@example.org"]]
            assert counted(metrics) == {("email", "sent"): 1.0}
        finally:
            notifier.stop()


def test_a_webhook_host_the_organisation_does_not_allow_is_a_warning(tmp_path: Path) -> None:
    """Where the operator's settings are known (the service, ``validate --config``), the author is told at
    load time; the task still loads and runs, its webhook is not called."""
    repo = tmp_path / "repo"
    repo.mkdir()
    assert (
        definitions(repo, "webhook: https://hooks.elsewhere.org/x\n") == []
    )  # settings unknown: not checked
    allowed = {"alpha": OrganisationNotifications(webhook_hosts=("*.example.org",), webhook_secret_env="K")}
    found = load_definitions(repo, notifications=allowed)
    assert [t.name for t in found.tasks] == ["t"]
    assert [str(p) for p in found.problems] == [
        "peach.yaml:7: warning: task 't': notify.webhook: host 'hooks.elsewhere.org' is not allowed for alpha"
        " (webhook_hosts: *.example.org); it will not be called"
    ]

    config = tmp_path / "peach.yaml"
    config.write_text(
        "organisations:\n  alpha:\n    notifications:\n      webhook_hosts: ['*.example.org']\n"
        "      webhook_secret_env: K\n"
    )
    command = [sys.executable, "-m", "scheduler.cli.main", "validate", str(repo), "--config", str(config)]
    lenient = subprocess.run(command, capture_output=True, text=True, check=False)
    strict = subprocess.run([*command, "--strict"], capture_output=True, text=True, check=False)
    assert lenient.returncode == 0 and "is not allowed for alpha" in lenient.stdout + lenient.stderr
    assert strict.returncode == 1
