"""The service: everything built from the operator configuration, started, and stopped in two steps.

``start`` settles the runs a previous process left RUNNING (restart recovery: each executor is asked
about the runs of its kind, ``scheduler.service.recovery``) and removes its rerun leftovers, then starts
the HTTP server and one thread per loop. ``request_stop`` (first SIGTERM) stops the loops from starting
runs and lets the running ones finish; ``request_force_stop`` (second signal, or the drain deadline)
kills them, and they are closed as ``KILLED``. Runs re-attached at restart are running runs like the
others: drained and killed the same way.

Executors come from ``executors.registry`` (one per kind), built with the services they share.

``reload`` re-reads the configuration (SIGHUP, ``POST /api/v1/admin/reload``, the file changing on disk:
``watch_config`` runs a thread for the first and the last) and applies what changed between runs: new
organisations get their loop, removed ones finish their running run and stop, everything else applies
from each loop's next run. An invalid file changes nothing; settings only a restart can change are said.
"""

import contextlib
import errno
import faulthandler
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from executors import cgroups, registry
from executors.environments import EnvironmentStore
from executors.yarn.client import ResourceManager
from executors.yarn.kerberos import TicketCache, rest_auth
from executors.yarn.site import ClusterSite, endpoints, read_site
from scheduler.capacity import Capacity
from scheduler.config import Config, load_config, redact_url
from scheduler.errors import ConfigError, PortInUse
from scheduler.http import dashboard
from scheduler.http.api import create_app
from scheduler.metrics import Metrics
from scheduler.names import METADATA_LOOP
from scheduler.notify.notifier import Notifier
from scheduler.repos.heads import RemoteHeads, repository_key
from scheduler.repos.sync import RepositorySync, repository_syncs
from scheduler.runs import reruns
from scheduler.runs.artifacts import ArtifactPolicy
from scheduler.runs.supervise import Runtime
from scheduler.service import recovery, reload
from scheduler.service.housekeeping import Housekeeping
from scheduler.service.loops import Loop, MetadataBoard, MetadataLoop, OrganisationLoop, OrganisationSource
from scheduler.service.reload import Reload, Triggers
from scheduler.store.records import Run
from scheduler.store.store import Store
from scheduler.workers import Workers

log = logging.getLogger(__name__)

KILLED_WAIT = 30  # seconds the loops get to end once their runs are killed at stop


class Service:
    def __init__(
        self, config: Config, environ: Mapping[str, str] | None = None, config_path: Path | None = None
    ) -> None:
        """``config_path``: the file ``config`` was read from, re-read by ``reload`` (None: as
        ``load_config`` finds it, ``$PEACH_CONFIG`` or the embedded default)."""
        environ = os.environ if environ is None else environ
        self.config, self.environ, self.config_path = config, environ, config_path
        config.workspace.mkdir(parents=True, exist_ok=True)
        self.store = Store.from_url(config.database_url)
        self.metrics = Metrics()
        environments = EnvironmentStore(
            config.workspace / "environments",
            backoff=config.environments.backoff,
            max_backoff=config.environments.max_backoff,
            observe=self._environment_event,
        )
        yarn = config.yarn
        # with spark on YARN, what the operator does not say comes from the cluster's yarn-site.xml
        # (HADOOP_CONF_DIR / YARN_CONF_DIR, as spark-submit reads it)
        site = read_site() if config.spark.master == "yarn" else ClusterSite()
        self.yarn = endpoints(yarn, site)
        for what, where in (
            ("ResourceManagers", self.yarn.resourcemanagers_from),
            ("log server", self.yarn.log_server_from),
        ):
            # where the YARN addresses come from matters only when spark runs on YARN
            (log.info if config.spark.master == "yarn" else log.debug)("YARN %s from %s", what, where)
        self.tickets = (  # the scheduler's own Kerberos ticket cache, kept fresh by ``_renewing``
            TicketCache(
                config.kerberos,
                config.workspace / "kerberos",
                environ=environ,
                observe=self.metrics.kerberos_event,
            )
            if config.kerberos is not None
            else None
        )
        auth, identity = rest_auth(config, self.tickets)
        self.resourcemanager = (
            ResourceManager(
                self.yarn.resourcemanagers,
                timeout=yarn.timeout,
                retries=yarn.retries,
                observe=self.metrics.resourcemanager_event,
                auth=auth,
                identity=identity,
            )
            if self.yarn.resourcemanagers
            else None
        )
        self.resumed: list[threading.Thread] = []  # supervisors of the runs re-attached at restart
        memory_caps, self.memory_caps = cgroups.detect()  # said once, here and in /readyz
        (log.info if memory_caps else log.warning)("%s", self.memory_caps)
        self._renewal_stop = threading.Event()
        self.services = services = registry.Services(
            environments,
            config.workspace / "runs",
            config.artifacts.root,
            self.resourcemanager,
            self.yarn.log_server,
            memory_caps,
            self.tickets,
        )
        executors = registry.build(config, services)
        policy = ArtifactPolicy(int(config.artifacts.max_bytes), config.artifacts.keep_runs)
        self.notifier = Notifier(
            config.notifications,
            {codops: org.notifications for codops, org in config.organisations.items()},
            self.store,
            self.metrics,
            environ,
        )
        self.capacity = Capacity(config.capacity.limits)
        self.metrics.watch_capacity(self.capacity.snapshot)
        self.runtime = Runtime(
            self.store,
            self.metrics,
            executors,
            config.loops.limits,
            artifacts=policy,
            notifier=self.notifier,
            capacity=self.capacity,
            run_memory_mib=config.capacity.run_memory,
        )
        self.housekeeping = Housekeeping(
            self.store, self.metrics, policy, config.artifacts.prune_interval, self.remove_rerun_leftovers
        )
        self.board = MetadataBoard()
        self.heads = RemoteHeads(config.git.freshness, config.git.parallel)
        self.organisations = {
            codops: OrganisationSource(codops, syncs, self.runtime, self.board)
            for codops, syncs in repository_syncs(config, environ, self.heads).items()
        }
        pause = config.loops.pause
        self.workers = Workers(config.loops.threads)
        self.loops: list[Loop] = [
            OrganisationLoop(org, pause, self.organisations) for org in self.organisations.values()
        ]
        self.metadata = MetadataLoop(
            self.organisations, self.board, self.runtime, pause, config.loops.metadata_parallel
        )
        self.loops.append(self.metadata)
        self.last_reload: Reload | None = None
        self._reload_lock = threading.Lock()
        self._reloads: tuple[threading.Thread, Triggers] | None = None
        self._started = False
        token_env = config.http.api_token_env
        self.app = create_app(
            self.store,
            self.metrics,
            token=environ.get(token_env) or None,
            token_env=token_env,
            kills=self.runtime.kills,
            ready=self.ready,
            details=lambda: {"memory_caps": self.memory_caps},
            repositories=dashboard.repository_links(config),
            yarn_ui=dashboard.yarn_ui(config),
            checkouts=self.checkouts,
            wake=self.wake,
            webhook_secret=environ.get(config.http.webhook_secret_env) or None,
            webhook_secret_env=config.http.webhook_secret_env,
            pushed=self.pushed,
            reload=lambda: self.reload("api").as_dict(),
            last_reload=lambda: self.last_reload.as_dict() if self.last_reload else None,
        )
        self._server: uvicorn.Server | None = None
        self._http: threading.Thread | None = None
        self._recovered = False

    def checkouts(self, codops: str) -> list[Path]:
        """The repository checkouts of ``codops`` (none for an organisation no longer configured)."""
        organisation = self.organisations.get(codops)
        return [sync.path for sync in organisation.syncs] if organisation else []

    def wake(self, codops: str) -> None:
        """The loops that may run ``codops``'s tasks start their next pass now."""
        for loop in self.loops:
            if loop.loop_name in (codops, METADATA_LOOP):
                loop.wake()

    def pushed(self, urls: set[str], branch: str) -> list[str]:
        """A push to ``branch`` of the repository at ``urls`` (its clone, ssh and web URLs): each configured
        one ends its shared head answer and wakes its organisation's loop; the changed ones, as
        ``codops: url``."""
        repositories = {repository_key(url) for url in urls}
        changed = []
        for codops, organisation in self.organisations.items():
            for sync in organisation.syncs:
                repository = sync.repository
                if repository.branch == branch and repository_key(repository.url) in repositories:
                    self.heads.changed(repository.url, branch)
                    changed.append(f"{codops}: {redact_url(repository.url)}")
                    self.wake(codops)
        log.info("push webhook for %s (%s): %s", sorted(repositories), branch, changed or "no repository")
        return changed

    def _environment_event(self, event: str) -> None:
        if event == "hit":
            self.metrics.env_cache_hit()
        else:
            self.metrics.env_build(event)

    # -- lifecycle ------------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Ready once restart recovery is done, the state database answers and, with Kerberos, the
        scheduler holds a valid ticket."""
        if not self._recovered:
            return False
        if self.tickets is not None and not self.tickets.valid:
            log.warning("readiness: no valid Kerberos ticket: %s", self.tickets.error or "not obtained yet")
            return False
        try:
            self.store.organisations()
        except Exception:
            log.warning("readiness: the state database does not answer", exc_info=True)
            return False
        return True

    def start(self) -> None:
        self.start_http()  # first: a port in use stops the start before anything else is done
        if self.tickets is not None:
            self.tickets.refresh()  # a failure is logged, counted and keeps /readyz not ready
            threading.Thread(target=self._renewing, name="kerberos", daemon=True).start()
        self.notifier.start()
        self.recover()
        self.housekeeping.start()
        for loop in self.loops:
            loop.start(self.workers)
        self._started = True
        log.info("service started: %d organisation loops and the metadata loop", len(self.organisations))

    def once(self) -> list[Run]:
        """Settle leftovers, then one pass of every loop (concurrently); the runs of that pass."""
        if self.tickets is not None:
            self.tickets.refresh()
        self.notifier.start()
        self.recover()
        for organisation in self.organisations.values():
            organisation.sync()  # so that the metadata loop knows every organisation's metadata tasks
        with ThreadPoolExecutor(len(self.loops), thread_name_prefix="once") as pool:
            passes = list(pool.map(lambda loop: loop.run_pass(), self.loops))
        self.housekeeping.run_pass()
        return [run for runs in passes for run in runs]

    def request_stop(self) -> None:
        if not self.runtime.stopping.is_set():
            log.info("stopping: no new runs; waiting for the running ones")
        self.runtime.stopping.set()
        self._wake_loops()

    def request_force_stop(self) -> None:
        if not self.runtime.killing.is_set():
            log.info("stopping now: killing the running runs")
        self.runtime.stopping.set()
        self.runtime.killing.set()
        self._wake_loops()

    def _wake_loops(self) -> None:
        for loop in self.loops:
            loop.wake()

    def wait_stopped(self, drain: float, signals: "StopSignals | None" = None) -> None:
        """After ``request_stop``: wait up to ``drain`` seconds for the loops, or until one more of
        ``signals`` arrives, then kill what still runs."""
        deadline = time.monotonic() + drain
        supervisors: list[Loop | threading.Thread] = [*self.loops, *self.resumed]
        while (alive := [t for t in supervisors if t.is_alive()]) and time.monotonic() < deadline:
            pause = max(0.0, min(0.2, deadline - time.monotonic()))
            if signals is None:
                alive[0].join(pause)
            elif signals.wait(pause):
                break  # a second signal: kill now
        if any(thread.is_alive() for thread in supervisors):
            self.request_force_stop()
        deadline = time.monotonic() + KILLED_WAIT
        for thread in supervisors:
            thread.join(max(0.0, deadline - time.monotonic()))
        if stuck := [thread.name for thread in supervisors if thread.is_alive()]:  # a bug of ours: say where
            log.error(
                "stopping: %s still going %d s after the runs were killed; every thread's stack follows",
                ", ".join(stuck),
                KILLED_WAIT,
            )
            faulthandler.dump_traceback(sys.stderr, all_threads=True)

    def _renewing(self) -> None:
        assert self.tickets is not None
        while not self._renewal_stop.is_set():
            self.tickets.wait_next(self._renewal_stop)

    def close(self) -> None:
        if self._reloads is not None:
            thread, triggers = self._reloads
            self._reloads = None
            triggers.poke()
            thread.join(10)
            triggers.close()
        self._renewal_stop.set()
        self.workers.close()
        self.notifier.stop()
        self.housekeeping.stop()
        if self._server is not None and self._http is not None:
            self._server.should_exit = True
            self._http.join(10)
        self.store.close()

    # -- live reconfiguration -------------------------------------------------------------------------

    def watch_config(self, triggers: Triggers) -> None:
        """Reload on each of ``triggers`` (SIGHUP, the file changing) from a thread of its own."""

        def watch() -> None:
            while self._reloads is not None:
                source = triggers.wait()
                if source is not None and self._reloads is not None:
                    self.reload(source)

        thread = threading.Thread(target=watch, name="reload", daemon=True)
        self._reloads = (thread, triggers)
        thread.start()

    def reload(self, source: str) -> Reload:
        """Re-read the configuration and apply what changed; an invalid one changes nothing."""
        with self._reload_lock:
            if self._reloads is not None:
                self._reloads[1].seen()
            try:
                new = load_config(self.config_path, self.environ)
            except ConfigError as exc:
                log.error("configuration reload (%s) refused, nothing changed: %s", source, exc)
                answer = Reload("invalid", source, error=str(exc))
            else:
                answer = self._apply(new, source)
            self.metrics.config_reload(answer.result)
            self.last_reload = answer
            return answer

    def _apply(self, new: Config, source: str) -> Reload:
        old = self.config
        later = reload.restart_needed(old, new)
        new = reload.effective(old, new)
        said = reload.changes(old, new)
        for key in later:
            log.warning("configuration reload (%s): %s changed; it applies at the next restart", source, key)
        if not said:
            log.info("configuration reload (%s): nothing to change", source)
            return Reload("unchanged", source, restart_needed=later)
        runtime = self.runtime
        runtime.executors = registry.build(new, self.services)
        runtime.limits = new.loops.limits
        runtime.artifacts = self.housekeeping.policy = ArtifactPolicy(
            int(new.artifacts.max_bytes), new.artifacts.keep_runs
        )
        runtime.run_memory_mib = new.capacity.run_memory
        self.capacity.resize(new.capacity.limits)
        self.metadata.parallel = max(1, new.loops.metadata_parallel)
        self.workers.resize(new.loops.threads)
        syncs = repository_syncs(new, self.environ, self.heads)
        for codops in old.organisations.keys() - new.organisations.keys():
            self._remove_organisation(codops)
        for codops, repositories in syncs.items():
            organisation = self.organisations.get(codops)
            if organisation is None:
                self._add_organisation(codops, repositories, new.loops.pause)
            elif old.organisations[codops] != new.organisations[codops] or old.git != new.git:
                organisation.replace_syncs(repositories)
        for loop in self.loops:
            loop.pause = new.loops.pause
        self.config = new
        for line in said:
            log.info("configuration reload (%s): %s", source, line)
        return Reload("applied", source, changes=tuple(said), restart_needed=later)

    def _add_organisation(self, codops: str, syncs: tuple[RepositorySync, ...], pause: float) -> None:
        organisation = OrganisationSource(codops, syncs, self.runtime, self.board)
        loop = OrganisationLoop(organisation, pause, self.organisations)
        self.organisations[codops] = organisation
        self.loops.append(loop)
        if self._started:
            loop.start(self.workers)

    def _remove_organisation(self, codops: str) -> None:
        """Its loop starts no new run; the running one finishes; then its tasks are marked removed."""
        self.organisations.pop(codops, None)
        self.board.publish(codops, ())
        for loop in self.loops:
            if isinstance(loop, OrganisationLoop) and loop.loop_name == codops and not loop.retired.is_set():
                loop.retire()

    # -- HTTP -----------------------------------------------------------------------------------------

    def start_http(self, timeout: float = 15.0) -> None:
        http = self.config.http
        sock = _listening_socket(http.host, http.port)
        config = uvicorn.Config(self.app, host=http.host, port=http.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._http = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._http.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._http.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the HTTP server could not listen on {http.host}:{http.port}")
            time.sleep(0.02)
        log.info("HTTP on http://%s:%d/ (API /api/v1, metrics /metrics)", http.host, self.port)

    @property
    def port(self) -> int:
        """The port the HTTP server listens on (the configured one, or the one chosen for port 0)."""
        assert self._server is not None and self._server.servers
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    # -- restart recovery -----------------------------------------------------------------------------

    def recover(self) -> list[Run]:
        """Close or re-attach every run a previous process left RUNNING (each executor decides for the
        runs of its kind); the runs closed. Re-attached runs are supervised from here on."""
        recovered = recovery.recover(self.runtime, self._log_path)
        self.resumed.extend(recovered.resumed)
        self.remove_rerun_leftovers()
        self._recovered = True
        return recovered.closed

    def _log_path(self, run_id: str) -> Path:
        return self.config.workspace / "runs" / run_id / "output.log"

    def remove_rerun_leftovers(self) -> list[Path]:
        """Rerun directories a killed service left behind that no run can still be using."""
        try:
            return reruns.remove_leftovers(self.config.workspace, self.store, self.config.loops.limits)
        except (OSError, SQLAlchemyError) as exc:
            log.warning("rerun leftovers not removed: %s", exc)
            return []


class StopSignals:
    """SIGTERM and SIGINT, for the main thread. A signal may be delivered to any thread: Python then runs
    its handler only once the main thread executes Python code again, and a main thread blocked in a
    system call is not woken. So the main thread waits on a pipe that is the process's wakeup fd
    (``signal.set_wakeup_fd``: written by the C-level handler on whichever thread got the signal), and
    the handler itself only counts (it runs between two bytecodes of the main thread: taking a lock
    there could deadlock). Build it in the main thread."""

    def __init__(self) -> None:
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._received = self._taken = 0
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        self._received += 1

    def wait(self, timeout: float | None = None) -> bool:
        """True when a stop signal arrived (one not taken yet) within ``timeout`` seconds (None: wait for
        one)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._received == self._taken:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:  # any signal with a Python handler (SIGHUP too): its handler runs before the check
                with contextlib.suppress(BlockingIOError):
                    os.read(self._read, 512)
        self._taken += 1
        return True


def _listening_socket(host: str, port: int) -> socket.socket:
    """The HTTP server's socket, bound here so that a port in use is one clear error, not uvicorn's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use: stop what listens there, or choose another "
                "port with --port N (or http.port in the configuration)"
            ) from None
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
