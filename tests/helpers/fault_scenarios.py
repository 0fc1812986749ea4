"""Fault scenarios against the real service (in this process): each breaks one part of the outside world
while the service runs, measures how it copes, mends the fault, and measures how it recovers.

Every scenario returns a ``Report``: the figures bench/faults.py prints (time to detect, time to recover,
runs affected, API answers during the fault) and the facts tests/test_faults.py asserts on. A scenario
waits on conditions with deadlines (``wait_for``); when the service does not do what is expected, the
wait fails with a message naming what did not happen.
"""

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.records import Run
from tests.helpers.backends import wait_for
from tests.helpers.executor_fixtures import make_wheel
from tests.helpers.fake_rm import FakeResourceManager
from tests.helpers.fake_spark_submit import write_stand_in
from tests.helpers.faultkit import ApiProbe, FaultyLink, PostgresCluster, fill, small_disk
from tests.helpers.gitserver import Upstream, git_daemon, tasks_yaml
from tests.helpers.orgs import QUICK, git, log_text, org_repo
from tests.helpers.spark_fixtures import make_spark_task

SHORT = "import time\n\ndef main():\n    print('working', flush=True)\n    time.sleep(3)\n    print('done')\n"
CHATTY = (
    "def main():\n"
    "    for i in range(6000):\n"
    "        print(f'line {i:05d} ' + 'x' * 60, flush=i % 500 == 0)\n"  # ~450 KB, more than the disk has left
)
SPARK_CODE = "def main(spark):\n    print('hello from the driver')\n"


@dataclass
class Report:
    """One scenario's outcome: figures for the report, facts for the tests."""

    scenario: str
    did: str = ""  # what the service did, in words
    recovered: bool = False
    detect: float | None = None  # seconds from the fault to the service reporting it
    recover: float | None = None  # seconds from the end of the fault to normal service
    affected: str = ""  # runs affected by the fault
    api: str = ""  # how the API answered during the fault
    facts: dict[str, Any] = field(default_factory=dict)


# -- the service under test --------------------------------------------------------------------------


@contextmanager
def running_service(root: Path, organisations: dict[str, Any], **sections: Any) -> Iterator[Service]:
    """The service from a configuration with short intervals, started; always stopped (runs killed)."""
    config: dict[str, Any] = {
        "workspace": str(root / "workspace"),
        "http": {"host": "127.0.0.1", "port": 0, "api_token_env": "PEACH_FAULT_TOKEN"},
        "loops": {"pause": "0.2s", "drain": "1s"},
        "git": {"timeout": "1s"},
        **sections,
        "organisations": organisations,
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    service = Service(load_config(path), environ={})
    try:
        service.start()
        yield service
    finally:
        service.request_force_stop()
        service.wait_stopped(30)
        service.close()


def local(repo: Path) -> dict[str, Any]:
    return {"repositories": [{"url": str(repo)}]}


def metric(service: Service, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for sample, found, value in service.metrics.series()
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    )


def now() -> datetime:
    return datetime.now(UTC)


def runs_since(service: Service, codops: str, since: datetime, task: str | None = None) -> list[Run]:
    """Runs of ``codops`` started at or after ``since``, oldest first."""
    found = service.store.list_runs(codops=codops, task=task, limit=500)
    return sorted((r for r in found if r.started_at >= since), key=lambda r: r.started_at)


def finished(runs: list[Run]) -> list[Run]:
    return [run for run in runs if run.status.final]


def succeeded(service: Service, codops: str, task: str, since: datetime | None = None) -> list[Run]:
    runs = runs_since(service, codops, since or datetime.min.replace(tzinfo=UTC), task)
    return [run for run in runs if run.status is RunStatus.SUCCEEDED]


def tally(runs: list[Run]) -> str:
    counts = Counter(run.status.value for run in runs)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"


def answers(probe: ApiProbe, start: float, end: float) -> tuple[str, dict[int, int]]:
    """How the API answered in [start, end]: in words, and the count per HTTP status (0: no answer)."""
    seen = Counter(status for _, status in probe.between(start, end))
    total = sum(seen.values())
    words = ", ".join(f"{status or 'none'}: {100 * n / total:.0f}%" for status, n in sorted(seen.items()))
    return f"{total} requests; {words}" if total else "not asked", dict(seen)


def probe_for(service: Service, *paths: str) -> ApiProbe:
    base = f"http://127.0.0.1:{service.port}"
    return ApiProbe(base, paths) if paths else ApiProbe(base)


# -- git server down, slow, flapping -------------------------------------------------------------------


def git_server(root: Path, kind: str) -> Report:
    """alpha's repository is served by ``git daemon`` through a link that goes down, becomes slower than
    ``git.timeout``, or flaps; beta's is a local repository. A commit is pushed during the fault."""
    report = Report(f"git server {kind}")
    upstream = Upstream(root / "alpha-upstream")
    upstream.commit(tasks_yaml("alpha", "ok"), "tasks")
    beta = org_repo(root, "beta", {"ok": (QUICK, {})})
    faults: dict[str, Callable[[FaultyLink], None]] = {
        "down": FaultyLink.down,
        "slow": lambda link: link.slow(1.5),  # each chunk 1.5 s late; git.timeout is 1 s
        "flapping": lambda link: link.flap(0.3),
    }
    with git_daemon(upstream.base) as url, closing(FaultyLink(int(url.rsplit(":", 1)[1]))) as link:
        alpha = {"repositories": [{"url": f"git://127.0.0.1:{link.port}/{upstream.bare.name}"}]}
        with running_service(root, {"alpha": alpha, "beta": local(beta)}) as service:
            wait_for(
                lambda: succeeded(service, "alpha", "ok") and succeeded(service, "beta", "ok"), 60, "runs"
            )
            probe = probe_for(service).start()
            began, since = time.monotonic(), now()
            faults[kind](link)
            failures = "peach_repository_consecutive_sync_failures"
            wait_for(lambda: metric(service, failures, codops="alpha") >= 1, 30, "alpha's sync failures")
            report.detect = time.monotonic() - began
            newer = upstream.commit({"README": "pushed while the server misbehaves\n"}, "newer")

            def stale() -> list[Run]:
                runs = finished(runs_since(service, "alpha", since))
                return [r for r in runs if "not the branch head" in (r.outcome or "")]

            wait_for(lambda: len(stale()) >= 2, 30, "alpha runs on the last good commit, saying so")
            wait_for(lambda: len(finished(runs_since(service, "beta", since))) >= 3, 30, "beta runs")
            problems = [p.message for p in service.store.problems("alpha")]
            peak = metric(service, failures, codops="alpha")
            ended, until = time.monotonic(), now()
            link.steady()

            def fresh() -> list[Run]:
                runs = runs_since(service, "alpha", until)
                return [r for r in runs if r.version == newer and r.status is RunStatus.SUCCEEDED]

            wait_for(fresh, 60, "a run of the commit pushed during the fault")
            wait_for(lambda: metric(service, failures, codops="alpha") == 0, 30, "the failure count reset")
            report.recover = time.monotonic() - ended
            probe.stop()
            during_alpha = finished(runs_since(service, "alpha", since))
            during_alpha = [r for r in during_alpha if r.started_at < until]
            during_beta = [r for r in finished(runs_since(service, "beta", since)) if r.started_at < until]
            report.api, codes = answers(probe, began, ended)
            report.recovered = True
            report.did = (
                f"alpha ran its last good commit and said so ({len(stale())} runs); "
                f"beta ran on ({len(during_beta)} runs)"
            )
            report.affected = (
                f"alpha: {len(stale())} on the last good commit, {tally(during_alpha)}; "
                f"beta: {tally(during_beta)}"
            )
            report.facts = {
                "alpha": [r.status for r in during_alpha],
                "beta": [r.status for r in during_beta],
                "stale_outcome": stale()[0].outcome,
                "problems": problems,
                "peak_failures": peak,
                "failed_syncs": metric(
                    service, "peach_repository_syncs_total", codops="alpha", result="failed"
                ),
                "codes": codes,
                "loops_alive": all(loop.is_alive() for loop in service.loops),
            }
    return report


# -- disk full in the workspace ------------------------------------------------------------------------


def disk_full(root: Path) -> Report:
    """The workspace is a 4 MiB tmpfs that is filled up, then freed; the state database lives elsewhere."""
    report = Report("disk full")
    alpha = org_repo(root, "alpha", {"chatty": (CHATTY, {}), "ok": (QUICK, {})})
    with small_disk(root / "workspace", "4m") as disk:
        state = f"sqlite:///{root / 'state.db'}"
        with running_service(root, {"alpha": local(alpha)}, state_url=state) as service:
            wait_for(
                lambda: succeeded(service, "alpha", "chatty") and succeeded(service, "alpha", "ok"),
                60,
                "runs",
            )
            probe = probe_for(service).start()
            began, since = time.monotonic(), now()
            filler = fill(disk, leave=64 * 1024)  # room for a runner script and part of one log

            def hit() -> list[Run]:
                runs = finished(runs_since(service, "alpha", since))
                return [r for r in runs if "No space left on device" in (r.outcome or "")]

            wait_for(hit, 30, "a run reporting the full disk")
            report.detect = time.monotonic() - began
            wait_for(lambda: len(hit()) >= 4, 30, "more runs on the full disk")
            during = finished(runs_since(service, "alpha", since))
            truncated = [r for r in during if "log incomplete" in (r.outcome or "")]
            ended, until = time.monotonic(), now()
            filler.unlink()
            wait_for(
                lambda: (
                    succeeded(service, "alpha", "chatty", until) and succeeded(service, "alpha", "ok", until)
                ),
                60,
                "both tasks to succeed again",
            )
            report.recover = time.monotonic() - ended
            probe.stop()
            during = [r for r in finished(runs_since(service, "alpha", since)) if r.started_at < until]
            after = succeeded(service, "alpha", "chatty", until)[0]
            report.api, codes = answers(probe, began, ended)
            report.recovered = True
            report.did = "runs failed or ended with a log marked incomplete, each saying the disk is full"
            report.affected = f"{len(during)} runs: {tally(during)}; {len(truncated)} with a truncated log"
            report.facts = {
                "outcomes": [(r.status, r.outcome) for r in during],
                "truncated": [(r.status, r.outcome, Path(r.log_path or "").exists()) for r in truncated],
                "after_log": log_text(after),
                "codes": codes,
                "loops_alive": all(loop.is_alive() for loop in service.loops),
            }
    return report


# -- the state database restarted ----------------------------------------------------------------------


def database_restart(root: Path, cluster: PostgresCluster | None = None) -> Report:
    """PostgreSQL is stopped while a run goes on, kept down until that run has ended, then started."""
    report = Report("state database restarted")
    own = cluster is None
    cluster = cluster or PostgresCluster()
    try:
        alpha = org_repo(root, "alpha", {"short": (SHORT, {})})
        beta = org_repo(root, "beta", {"ok": (QUICK, {})})
        orgs = {"alpha": local(alpha), "beta": local(beta)}
        with running_service(root, orgs, state_url=cluster.url) as service:
            wait_for(lambda: succeeded(service, "beta", "ok"), 60, "a first beta run")
            going = wait_for(
                lambda: [r for r in service.store.running_runs() if r.task == "short" and r.handle],
                60,
                "the run",
            )[0]
            probe = probe_for(service, "/api/v1/runs?limit=5", "/readyz", "/healthz").start()
            began = time.monotonic()
            cluster.stop()
            wait_for(lambda: probe.get("/api/v1/runs?limit=5") == 503, 30, "the API to answer 503")
            report.detect = time.monotonic() - began
            errors = "peach_state_database_errors_total"
            wait_for(
                lambda: metric(service, errors, source="run") >= 1, 30, "the run's end failing to record"
            )
            ready_down = probe.get("/readyz")
            metrics_down = probe.get("/metrics")
            ended = time.monotonic()
            cluster.start()
            record = wait_for(
                lambda: service.store.get_run(going.id).status.final and service.store.get_run(going.id),
                60,
                "the run's end recorded",
            )
            restarted = now()
            wait_for(
                lambda: (
                    succeeded(service, "alpha", "short", restarted)
                    and succeeded(service, "beta", "ok", restarted)
                ),
                60,
                "new runs in both loops",
            )
            wait_for(lambda: probe.get("/readyz") == 200, 30, "ready again")
            report.recover = time.monotonic() - ended
            probe.stop()
            report.api, codes = answers(probe, began, ended)
            report.recovered = True
            report.did = (
                "API answered 503 and /readyz 503; the run's end was recorded once the database was back"
            )
            report.affected = f"1 run going through the restart: {record.status.value} ({record.outcome})"
            report.facts = {
                "record": record,
                "codes": codes,
                "ready_down": ready_down,
                "metrics_down": metrics_down,
                "errors": {s: metric(service, errors, source=s) for s in ("api", "loop", "run")},
                "loops_alive": all(loop.is_alive() for loop in service.loops),
            }
    finally:
        if own:
            cluster.close()
    return report


# -- YARN ResourceManager failing over, answering 500s, timing out ---------------------------------------


def resourcemanager(root: Path, kind: str) -> Report:
    """A spark task on YARN (an HA pair of fake ResourceManagers, a stand-in spark-submit) is running when
    the active RM fails over, answers 500, or answers later than ``yarn.timeout``; beta's python task
    runs meanwhile. Then the fault ends and the application finishes."""
    report = Report(f"YARN RM {kind}")
    rm1, rm2 = FakeResourceManager(), FakeResourceManager()
    try:
        rm2.apps, rm2.standby = rm1.apps, True  # one cluster, two ResourceManagers
        repo = root / "yarn-repo"
        make_spark_task(repo, SPARK_CODE, codops="yarn", name="job")
        git(repo, "init", "-q")
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-m", "spark task")
        beta = org_repo(root, "beta", {"ok": (QUICK, {})})
        submit = write_stand_in(root, rm1.url)
        sections = {
            "spark": {"submit": str(submit), "master": "yarn", "deploy_mode": "cluster"},
            "yarn": {
                "resourcemanagers": [rm1.url, rm2.url],
                "timeout": "0.5s",
                "retries": 2,
                "poll": "0.2s",
                "log_wait": "0.5s",
            },
        }
        with running_service(root, {"yarn": local(repo), "beta": local(beta)}, **sections) as service:
            run = wait_for(
                lambda: [r for r in service.store.running_runs() if r.application_id], 120, "the YARN run"
            )[0]
            app_id = run.application_id
            log = Path(str(run.log_path))  # the fault must hit the following, not the submission
            followed = f"YARN application {app_id} (tag"
            wait_for(lambda: log.exists() and followed in log.read_text(), 60, "the application followed")
            probe = probe_for(service).start()
            began, since, asked = time.monotonic(), now(), len(rm1.requests) + len(rm2.requests)
            if kind == "failover":
                rm1.standby, rm2.standby = True, False
                watched = "peach_resourcemanager_failovers_total"
            elif kind == "errors":
                rm1.error = 500
                watched = "peach_resourcemanager_errors_total"
            else:
                rm1.delay = 1.0  # twice yarn.timeout
                watched = "peach_resourcemanager_errors_total"
            wait_for(lambda: metric(service, watched) >= 1, 30, f"{watched} to count the fault")
            report.detect = time.monotonic() - began
            wait_for(lambda: len(finished(runs_since(service, "beta", since))) >= 3, 30, "beta runs")
            if kind == "failover":  # the client moves once, then follows the run on the new active RM
                path = "/ws/v1/cluster/apps"  # the tracker's one call for every run
                wait_for(lambda: rm2.requests.count(("GET", path)) >= 2, 30, "polls of the new active RM")
            else:
                wait_for(lambda: metric(service, watched) >= 2, 30, "a second poll through the fault")
            during = service.store.get_run(run.id)
            ended = time.monotonic()
            fault_seconds = ended - began
            requests = len(rm1.requests) + len(rm2.requests) - asked
            rm1.error, rm1.delay = None, 0.0
            rm1.set_state(app_id or "", "FINISHED", "SUCCEEDED")
            record = wait_for(
                lambda: service.store.get_run(run.id).status.final and service.store.get_run(run.id),
                60,
                "the end",
            )
            report.recover = time.monotonic() - ended
            probe.stop()
            beta_runs = [r for r in finished(runs_since(service, "beta", since)) if r.started_at < now()]
            report.api, codes = answers(probe, began, ended)
            report.recovered = record.status is RunStatus.SUCCEEDED
            report.did = f"the run stayed RUNNING, followed through the fault; then {record.status.value}"
            report.affected = f"1 YARN run delayed, 0 lost; beta: {tally(beta_runs)}"
            report.facts = {
                "during": during.status,
                "record": record,
                "log": log_text(record),
                "beta": [r.status for r in beta_runs],
                "requests_per_second": requests / fault_seconds,
                "errors": metric(service, "peach_resourcemanager_errors_total"),
                "failovers": metric(service, "peach_resourcemanager_failovers_total"),
                "active": service.resourcemanager.active if service.resourcemanager else None,
                "rm2": rm2.url,
                "codes": codes,
            }
            report.api += f"; {requests / fault_seconds:.1f} RM requests/s"
    finally:
        rm1.close()
        rm2.close()
    return report


# -- uv failing: the package index unreachable ---------------------------------------------------------


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def package_index(root: Path, name: str, version: str) -> Iterator[int]:
    """A PEP 503 simple index on loopback serving one wheel; yields its port."""
    wheel = make_wheel(root / "files", name, version, "VALUE = 'from the index'\n")
    page = root / "simple" / name / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(f'<html><body><a href="/files/{wheel.name}">{wheel.name}</a></body></html>\n')
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="package-index", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def environment_variables(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def uv_failing(root: Path) -> Report:
    """alpha's ``needs`` task depends on a package whose index is unreachable (uv fails), while alpha's
    ``ok`` and beta's ``ok`` need nothing new. Then the index comes back."""
    report = Report("uv failing (index unreachable)")
    needs = {"dependencies": ["peachfault==1.0"]}
    alpha = org_repo(
        root,
        "alpha",
        {
            "needs": ("import peachfault\n\ndef main():\n    print(peachfault.VALUE)\n", needs),
            "ok": (QUICK, {}),
        },
    )
    beta = org_repo(root, "beta", {"ok": (QUICK, {})})
    with package_index(root / "index", "peachfault", "1.0") as port, closing(FaultyLink(port)) as link:
        link.down()
        uv = {"UV_INDEX_URL": f"http://127.0.0.1:{link.port}/simple/", "UV_CACHE_DIR": str(root / "uv-cache")}
        sections = {"environments": {"backoff": "1s", "max_backoff": "2s"}}
        with (
            environment_variables(**uv),
            running_service(root, {"alpha": local(alpha), "beta": local(beta)}, **sections) as service,
        ):
            probe = probe_for(service).start()
            began, since = time.monotonic(), now()

            def refused() -> list[Run]:
                runs = finished(runs_since(service, "alpha", since, "needs"))
                return [r for r in runs if "could not install 'peachfault==1.0'" in (r.outcome or "")]

            wait_for(refused, 60, "a run failing on its environment")
            report.detect = time.monotonic() - began

            def waiting() -> str | None:  # between two attempts the task is PENDING, saying why
                task = next(t for t in service.store.task_states("alpha") if t.task == "needs")
                return task.reason if task.state.value == "PENDING" else None

            reason = wait_for(waiting, 30, "the task PENDING with its environment's failure")
            wait_for(lambda: len(refused()) >= 4, 120, "more refused runs")  # uv retries ~7 s each
            wait_for(lambda: len(succeeded(service, "beta", "ok", since)) >= 3, 30, "beta runs")
            builds = metric(service, "peach_environment_builds_total", result="failed")
            attempts = len(refused())
            ended, until = time.monotonic(), now()
            link.up()
            wait_for(lambda: succeeded(service, "alpha", "needs", until), 60, "the task to run once uv works")
            report.recover = time.monotonic() - ended
            probe.stop()
            during = [
                r for r in finished(runs_since(service, "alpha", since, "needs")) if r.started_at < until
            ]
            others = [
                r
                for codops in ("alpha", "beta")
                for r in finished(runs_since(service, codops, since))
                if r.task == "ok" and r.started_at < until
            ]
            ok_run = succeeded(service, "alpha", "needs", until)[0]
            report.api, codes = answers(probe, began, ended)
            report.recovered = True
            report.did = (
                f"the task failed with the installer's error; {builds:.0f} builds tried for {attempts} runs"
            )
            report.affected = f"needs: {tally(during)}; other tasks: {tally(others)}"
            report.facts = {
                "outcomes": [r.outcome for r in during],
                "logs": [log_text(r) if r.log_path else None for r in during],
                "builds_failed": builds,
                "attempts": attempts,
                "pending_reason": reason,
                "others": [r.status for r in others],
                "after_log": log_text(ok_run),
                "codes": codes,
            }
    return report


SCENARIOS: dict[str, Callable[[Path], Report]] = {
    "git-down": partial(git_server, kind="down"),
    "git-slow": partial(git_server, kind="slow"),
    "git-flapping": partial(git_server, kind="flapping"),
    "disk-full": disk_full,
    "database-restart": database_restart,
    "rm-failover": partial(resourcemanager, kind="failover"),
    "rm-errors": partial(resourcemanager, kind="errors"),
    "rm-timeouts": partial(resourcemanager, kind="timeouts"),
    "uv-failing": uv_failing,
}


def as_row(report: Report) -> dict[str, str]:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return {
        "scenario": report.scenario,
        "what the service did": report.did,
        "recovered": "yes" if report.recovered else "no",
        "detect s": seconds(report.detect),
        "recover s": seconds(report.recover),
        "runs affected": report.affected,
        "API during the fault": report.api,
    }
