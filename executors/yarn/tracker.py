"""One ResourceManager call per interval for every followed application.

Each run on YARN used to ask for its own application's report every poll: a thousand running
applications meant five hundred requests a second on the ResourceManager. The tracker asks once per
interval for every active application tagged ``peach`` (``/ws/v1/cluster/apps?applicationTags=peach&
states=NEW,...,RUNNING``) and wakes each follower with the answer. An application that a fresh answer no
longer lists has ended (or YARN forgot it): only then does its follower ask for its own, final report (and
its logs). The tracker's thread runs while something is followed, and stops by itself otherwise.
"""

import threading
import time
from collections.abc import Callable
from typing import Any

from executors.yarn.client import ACTIVE_STATES, ResourceManager
from scheduler.errors import ResourceManagerError

PEACH_TAG = "peach"
ENDED = "ended"  # what ``report`` says of an application a fresh answer does not list


class ApplicationTracker:
    def __init__(
        self, rm: ResourceManager, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rm, self.interval, self._clock = rm, interval, clock
        self._lock = threading.Lock()
        self._followers: dict[str, tuple[float, threading.Event]] = {}  # app -> (since, follower's wake)
        self._active: dict[str, dict[str, Any]] = {}  # the last answer: active applications by id
        self._asked_at: float | None = None  # when the last answer was asked for
        self._error: ResourceManagerError | None = None  # why the last call failed
        self._thread: threading.Thread | None = None

    def follow(self, app_id: str, wake: threading.Event) -> None:
        """Include ``app_id`` in the next calls; ``wake`` is set after each answer."""
        with self._lock:
            if app_id not in self._followers:
                self._followers[app_id] = (self._clock(), wake)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="yarn-tracker", daemon=True)
                self._thread.start()

    def forget(self, app_id: str) -> None:
        with self._lock:
            self._followers.pop(app_id, None)

    def report(self, app_id: str) -> dict[str, Any] | str | None:
        """The application's report in the last answer asked for since it was followed; ``ENDED`` when that
        answer does not list it; None when there is no such answer yet. Raises the last call's error."""
        with self._lock:
            since = self._followers.get(app_id, (self._clock(), None))[0]
            if self._asked_at is None or self._asked_at < since:
                return None
            if self._error is not None:
                raise self._error
            return self._active.get(app_id, ENDED)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._followers:
                    self._thread = None
                    return
            asked = self._clock()
            try:
                apps, error = self.rm.apps_by_tag(PEACH_TAG, ACTIVE_STATES), None
            except ResourceManagerError as exc:
                apps, error = [], exc
            with self._lock:
                if error is None:
                    self._active = {str(app.get("id")): app for app in apps}
                self._asked_at, self._error = asked, error
                wakes = [wake for _, wake in self._followers.values()]
            for wake in wakes:
                wake.set()
            time.sleep(self.interval)  # the poll interval itself, not a synchronisation
