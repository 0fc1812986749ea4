"""The service's housekeeping thread: artifacts retention, every ``artifacts.prune_interval``, and the
removal of rerun directories a killed service left behind (``scheduler.runs.reruns.remove_leftovers``).

One pass deletes the artifacts of runs past their task's last ``keep_runs`` runs that are not marked keep
(``scheduler.runs.artifacts.prune``) and sets the kept-bytes gauge from the store. A failing pass (the
database restarting) is logged and tried again at the next interval; it never stops the service.
"""

import logging
import threading
from collections.abc import Callable

from scheduler.metrics import Metrics
from scheduler.runs.artifacts import ArtifactPolicy, prune
from scheduler.store.store import Store

log = logging.getLogger(__name__)


class Housekeeping(threading.Thread):
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        policy: ArtifactPolicy,
        interval: float,
        leftovers: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(name="housekeeping", daemon=True)
        self.store, self.metrics, self.policy, self.interval = store, metrics, policy, interval
        self.leftovers = leftovers
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            self.run_pass()
            if self._halt.wait(self.interval):
                return

    def run_pass(self) -> int:
        """One retention pass; returns how many runs' artifacts it pruned."""
        if self.leftovers is not None:
            try:
                self.leftovers()
            except Exception:
                log.exception(
                    "housekeeping: removing rerun leftovers failed; trying again in %g s", self.interval
                )
        try:
            runs, freed = prune(self.store, self.policy)
            _, kept = self.store.artifact_totals()
        except Exception:
            log.exception("housekeeping: artifacts retention failed; trying again in %g s", self.interval)
            return 0
        self.metrics.artifacts_retained(kept, runs)
        if runs:
            log.info(
                "housekeeping: pruned the artifacts of %d runs (%d bytes); %d bytes kept", runs, freed, kept
            )
        return runs

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)
