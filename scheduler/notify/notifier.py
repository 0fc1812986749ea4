"""The notifier: told of every finished run, it sends the emails and webhooks of state changes, off the loops.

``run_finished`` is what a run's supervisor calls as the run closes; it only puts the run on a bounded queue
(full: the notification is dropped and counted), so a loop never waits for a mail server or a webhook. A
dispatcher thread takes it, asks the store for the task's previous telling run (``message.event_of``),
and hands each delivery (one email to the recipients, one webhook) to a small pool of sender threads. A
failed attempt is tried again after a backoff (``notifications.backoff``, doubling, at most
``max_backoff``) up to ``notifications.attempts`` times, unless it cannot succeed (an address refused, a
4xx answer). Everything is counted in ``peach_notifications_total{channel, result}``.

Who is told: the task's ``notify.email`` (else the organisation's default recipients), for the task's
``notify.on`` events (default all three), and the task's ``notify.webhook`` when its host is one the
organisation allows (``webhook_hosts``; every webhook is signed with the organisation's secret). A run
re-attached after a restart has no task definition at hand: the organisation's defaults apply to it.
"""

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from scheduler.errors import ConfigError
from scheduler.metrics import Metrics
from scheduler.notify import channels
from scheduler.notify.message import TELLING, Notification, event_of
from scheduler.notifysettings import NotificationSettings, OrganisationNotifications
from scheduler.spec.notifyspec import NotifyEvent, NotifySpec
from scheduler.store.records import Run
from scheduler.store.store import Store

log = logging.getLogger(__name__)
ALL_EVENTS = tuple(NotifyEvent)
LOOK_BACK = 50  # runs looked at to find the previous telling one (KILLED and LOST ones are skipped)


@dataclass(order=True)
class Delivery:
    due: float
    number: int
    channel: str = field(compare=False)
    what: str = field(compare=False)  # for the log: "email to 2 recipients of alpha/task (run r-...)"
    send: Callable[[], None] = field(compare=False)
    attempt: int = field(default=1, compare=False)


class Notifier:
    def __init__(
        self,
        settings: NotificationSettings,
        organisations: Mapping[str, OrganisationNotifications],
        store: Store,
        metrics: Metrics,
        environ: Mapping[str, str],
        *,
        senders: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.organisations, self.store, self.metrics = settings, organisations, store, metrics
        self._environ, self._clock = environ, clock
        self._context = channels.tls_context(settings.ca_file)
        self._inbox: queue.Queue[tuple[Run, NotifySpec | None]] = queue.Queue(settings.queue)
        self._retries: list[Delivery] = []
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._sending = 0  # attempts under way
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # daemon threads: a relay that hangs must not hold the service's exit either
        self._work: queue.Queue[Delivery | None] = queue.Queue()
        self._senders = [
            threading.Thread(target=self._sender, name=f"notify-send-{n}", daemon=True)
            for n in range(senders)
        ]
        self._thread = threading.Thread(target=self._dispatch, name="notify", daemon=True)
        self.pending = 0  # deliveries not yet sent nor given up
        self.considered = 0  # runs whose state change was looked at (both for tests)

    # -- what the loops call --------------------------------------------------------------------------

    def run_finished(self, run: Run, spec: NotifySpec | None) -> None:
        """A run closed (``spec``: its task's ``notify``, None when unknown); never blocks."""
        if run.status not in TELLING:
            return
        try:
            self._inbox.put_nowait((run, spec))
        except queue.Full:
            self.metrics.notification("any", "dropped")
            log.warning(
                "run %s of %s/%s: notification dropped, the queue is full", run.id, run.codops, run.task
            )
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        for thread in (*self._senders, self._thread):
            if not thread.is_alive():
                thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Consider the runs already told, give the attempts under way up to ``timeout`` seconds in all,
        and give up the retries still waiting (they are logged)."""
        deadline = self._clock() + timeout
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._idle:
            self._idle.wait_for(lambda: self._sending == 0, max(0.0, deadline - self._clock()))
        for _ in self._senders:
            self._work.put(None)
        with self._lock:
            if self._retries or self._sending:
                log.warning(
                    "notifications: %d retries and %d attempts given up at stop",
                    len(self._retries),
                    self._sending,
                )

    # -- the dispatcher -------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            stopping = self._stopping.is_set()  # read first: what was told before the stop is still done
            self._wake.wait(0 if stopping else self._until_next_retry())
            self._wake.clear()
            while True:
                try:
                    run, spec = self._inbox.get_nowait()
                except queue.Empty:
                    break
                try:
                    self._consider(run, spec)
                except Exception:  # a bug or the database: that one notification is lost, not the thread
                    log.exception(
                        "run %s of %s/%s: notification not considered", run.id, run.codops, run.task
                    )
                self.considered += 1
            if stopping:
                return
            for delivery in self._due_retries():
                self._submit(delivery)

    def _until_next_retry(self) -> float:
        with self._lock:
            if not self._retries:
                return 1.0
            return max(0.0, min(1.0, self._retries[0].due - self._clock()))

    def _due_retries(self) -> list[Delivery]:
        now, due = self._clock(), []
        with self._lock:
            while self._retries and self._retries[0].due <= now:
                due.append(heapq.heappop(self._retries))
        return due

    def _consider(self, run: Run, spec: NotifySpec | None) -> None:
        earlier = self.store.list_runs(codops=run.codops, task=run.task, limit=LOOK_BACK, before=run.id)
        previous = next((r.status for r in earlier if r.status in TELLING), None)
        event = event_of(previous, run.status)
        if event is None:
            return
        organisation = self.organisations.get(run.codops, OrganisationNotifications())
        if event not in (spec.on if spec else ALL_EVENTS):
            return
        notification = Notification(event, run, self.settings.dashboard_url)
        key = f"{run.codops}/{run.task} (run {run.id}, {event.value})"
        recipients = (spec.email if spec else ()) or organisation.email
        if recipients:
            self._email(notification, recipients, key)
        if spec is not None and spec.webhook:
            self._webhook(notification, spec.webhook, organisation, key)

    def _email(self, notification: Notification, recipients: tuple[str, ...], key: str) -> None:
        smtp = self.settings.smtp
        if smtp is None:
            self.metrics.notification("email", "refused")
            log.warning("%s: email to %d recipients not sent: no notifications.smtp", key, len(recipients))
            return
        try:
            password = smtp.password(self._environ)
        except ConfigError as exc:
            self.metrics.notification("email", "refused")
            log.warning("%s: email not sent: %s", key, exc)
            return
        sender, context = self.settings.sender, self._context

        def send() -> None:
            channels.send_email(smtp, password, sender, recipients, notification, context)

        self._submit(self._delivery("email", f"email of {key} to {len(recipients)} recipients", send))

    def _webhook(
        self, notification: Notification, url: str, organisation: OrganisationNotifications, key: str
    ) -> None:
        host = urlsplit(url).hostname or ""
        if not organisation.allows(host):
            self.metrics.notification("webhook", "refused")
            log.warning("%s: webhook not sent: host %r is not in the organisation's webhook_hosts", key, host)
            return
        try:
            secret = organisation.secret(self._environ)
        except ConfigError as exc:
            self.metrics.notification("webhook", "refused")
            log.warning("%s: webhook not sent: %s", key, exc)
            return
        assert secret is not None  # webhook_hosts require a secret (the configuration says so)
        timeout, context = self.settings.timeout, self._context

        def send() -> None:
            channels.post_webhook(url, secret, notification, timeout, context)

        self._submit(self._delivery("webhook", f"webhook of {key} to {host}", send))

    def _delivery(self, channel: str, what: str, send: Callable[[], None]) -> Delivery:
        with self._lock:
            self.pending += 1
        return Delivery(self._clock(), next(self._numbers), channel, what, send)

    # -- the senders ----------------------------------------------------------------------------------

    def _submit(self, delivery: Delivery) -> None:
        with self._lock:
            self._sending += 1
        self._work.put(delivery)

    def _sender(self) -> None:
        while (delivery := self._work.get()) is not None:
            try:
                self._try(delivery)
            finally:
                with self._idle:
                    self._sending -= 1
                    self._idle.notify_all()

    def _try(self, delivery: Delivery) -> None:
        try:
            delivery.send()
        except channels.DeliveryError as exc:
            self._failed(delivery, exc)
            return
        except Exception as exc:  # a bug of ours: never retried forever
            log.exception("%s: failed", delivery.what)
            self._failed(delivery, channels.DeliveryError(repr(exc), permanent=True))
            return
        self.metrics.notification(delivery.channel, "sent")
        log.info("%s: sent (attempt %d)", delivery.what, delivery.attempt)
        self._done()

    def _failed(self, delivery: Delivery, error: channels.DeliveryError) -> None:
        settings = self.settings
        if error.permanent or delivery.attempt >= settings.attempts:
            self.metrics.notification(delivery.channel, "failed")
            log.warning("%s: given up after attempt %d: %s", delivery.what, delivery.attempt, error)
            self._done()
            return
        wait = min(settings.max_backoff, settings.backoff * 2 ** (delivery.attempt - 1))
        self.metrics.notification(delivery.channel, "retried")
        log.warning(
            "%s: attempt %d failed (%s); next in %.0f s", delivery.what, delivery.attempt, error, wait
        )
        delivery.attempt += 1
        delivery.due = self._clock() + wait
        with self._lock:
            heapq.heappush(self._retries, delivery)
        self._wake.set()

    def _done(self) -> None:
        with self._lock:
            self.pending -= 1
