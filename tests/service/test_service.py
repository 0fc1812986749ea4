"""The service in this process: real git repositories, real child processes, real SQLite/PostgreSQL."""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.exc import OperationalError

from scheduler.config import load_config
from scheduler.runs import runlogs
from scheduler.service.reload import Triggers
from scheduler.service.service import Service, StopSignals
from scheduler.status import RunStatus
from tests.helpers.backends import (
    create_database,
    drop_database,
    prometheus_query,
    prometheus_server,
    wait_for,
)
from tests.helpers.hadoop import write_configuration
from tests.helpers.orgs import FAIL, QUICK, SLOW, SPEC_RUN_FIELDS, commit, org_repo, tasks_files, write_config

TOKEN = "s3cret-token-for-tests"


def service_for(tmp_path: Path, repos: dict[str, Path], **kwargs: Any) -> Service:
    return Service(load_config(write_config(tmp_path, repos, **kwargs)), environ={"PEACH_TEST_TOKEN": TOKEN})


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[Service]]:
    """Services started by a test, always stopped (runs killed) at its end."""
    started: list[Service] = []
    yield started
    for service in started:
        service.request_force_stop()
        service.wait_stopped(30)
        service.close()


def statuses(service: Service, codops: str, task: str) -> list[RunStatus]:
    return [run.status for run in service.store.list_runs(codops=codops, task=task, limit=100)]


def test_once_runs_every_loop_and_keeps_history(tmp_path: Path) -> None:
    a = org_repo(
        tmp_path, "alpha", {"ok": (QUICK, {}), "broken": (FAIL, {}), "off": (QUICK, {"enabled": False})}
    )
    b = org_repo(
        tmp_path, "beta", {"ok": (QUICK, {}), "meta": (QUICK, {"loop": "metadata", "timeout": "1m"})}
    )
    service = service_for(tmp_path, {"alpha": a, "beta": b})
    try:
        runs = service.once()
        by_key = {(r.codops, r.task): r for r in runs}
        assert {k: r.status for k, r in by_key.items()} == {
            ("alpha", "ok"): RunStatus.SUCCEEDED,
            ("alpha", "broken"): RunStatus.FAILED,
            ("beta", "ok"): RunStatus.SUCCEEDED,
            ("beta", "meta"): RunStatus.SUCCEEDED,
        }
        failed = by_key[("alpha", "broken")]
        assert failed.outcome == "exit code 1"
        assert failed.error == "RuntimeError: boom"
        assert b"RuntimeError: boom" in runlogs.read(Path(failed.log_path or ""))[0]
        assert by_key[("beta", "meta")].loop == "metadata"
        head = commit(a, {"README": "x"}, "another commit")
        assert by_key[("alpha", "ok")].version != head  # the version is the commit the run used
        states = {(t.codops, t.task): (t.state.value, t.last_status) for t in service.store.task_states()}
        assert states[("alpha", "broken")] == ("FINISHED", RunStatus.FAILED)
        assert states[("alpha", "off")] == ("PENDING", None)
        assert service.once()[0].version == head
    finally:
        service.close()


def test_hanging_task_does_not_delay_another_loop_and_stop_kills_it(
    tmp_path: Path, running: list[Service]
) -> None:
    a = org_repo(tmp_path, "alpha", {"hang": (SLOW, {})})
    b = org_repo(tmp_path, "beta", {"ok": (QUICK, {})})
    service = service_for(tmp_path, {"alpha": a, "beta": b})
    running.append(service)
    service.start()

    wait_for(lambda: statuses(service, "alpha", "hang") == [RunStatus.RUNNING], 30, "the hanging run")
    wait_for(lambda: statuses(service, "beta", "ok").count(RunStatus.SUCCEEDED) >= 3, 60, "three beta runs")
    assert statuses(service, "alpha", "hang") == [RunStatus.RUNNING]

    service.request_stop()
    service.wait_stopped(drain=0.5)  # the hanging run does not end by itself: it is killed
    hang = service.store.list_runs(codops="alpha", task="hang")[0]
    assert (hang.status, hang.outcome) == (RunStatus.KILLED, "killed by SIGTERM: the scheduler is stopping")


def test_new_commit_is_picked_up_and_broken_commit_keeps_last_good(
    tmp_path: Path, running: list[Service]
) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {})})
    service = service_for(tmp_path, {"alpha": repo})
    running.append(service)
    service.start()
    wait_for(lambda: statuses(service, "alpha", "ok"), 30, "a first run")

    added = commit(repo, tasks_files("alpha", {"ok": (QUICK, {}), "new": (QUICK, {})}), "add a task")
    new_run = wait_for(lambda: service.store.list_runs(codops="alpha", task="new"), 30, "the new task's run")[
        0
    ]
    assert new_run.version == added

    commit(repo, {"peach.yaml": "codops: alpha\ntasks: [oops\n"}, "break the YAML")
    problems = wait_for(lambda: service.store.problems("alpha"), 30, "the broken commit's problem")
    assert any("YAML syntax error" in p.message for p in problems)
    wait_for(
        lambda: len(service.store.list_runs(codops="alpha", task="new", limit=100)) >= 3, 30, "more runs"
    )
    assert {run.version for run in service.store.list_runs(codops="alpha", limit=100)} <= {
        added,
        *(r.version for r in service.store.list_runs(codops="alpha", task="ok", limit=100)),
    }
    assert service.store.list_runs(codops="alpha", task="new")[0].version == added


def test_triggered_disabled_task_runs_once(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"off": (QUICK, {"enabled": False})})
    service = service_for(tmp_path, {"alpha": repo})
    try:
        assert service.once() == []
        service.store.request_trigger("alpha", "off")
        assert [(r.task, r.trigger.value) for r in service.once()] == [("off", "manual")]
        assert service.once() == []
    finally:
        service.close()


def test_a_trigger_refused_for_a_running_run_waits_until_it_can_run(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"off": (QUICK, {"enabled": False})})
    service = service_for(tmp_path, {"alpha": repo})
    try:
        service.recover()
        loop = next(loop for loop in service.loops if loop.loop_name == "alpha")
        assert loop.run_pass() == []
        going = service.store.start_run(  # as a run re-attached at a restart would be
            "alpha", "off", loop="alpha", executor="python", version=None
        )
        service.store.request_trigger("alpha", "off")
        assert loop.run_pass() == []  # refused: the task already has a running run
        assert loop.run_pass() == []
        service.store.finish_run(going.id, RunStatus.SUCCEEDED, "exit code 0")
        assert [(r.task, r.trigger.value) for r in loop.run_pass()] == [("off", "manual")]
        assert loop.run_pass() == []  # taken once it ran
    finally:
        service.close()


def test_a_stopping_service_gives_back_the_triggers_it_did_not_run(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"off": (QUICK, {"enabled": False})})
    service = service_for(tmp_path, {"alpha": repo})
    try:
        service.recover()
        loop = next(loop for loop in service.loops if loop.loop_name == "alpha")
        loop.run_pass()
        service.store.request_trigger("alpha", "off")
        service.request_stop()
        assert loop.run_pass() == []
        assert [(t.codops, t.task) for t in service.store.take_triggers("alpha")] == [("alpha", "off")]
    finally:
        service.close()


def test_every_spaces_runs_out(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"hourly": (QUICK, {"every": "1h"}), "always": (QUICK, {})})
    service = service_for(tmp_path, {"alpha": repo})
    try:
        assert sorted(r.task for r in service.once()) == ["always", "hourly"]
        assert [r.task for r in service.once()] == ["always"]
        states = {t.task: t for t in service.store.task_states("alpha")}
        assert states["always"].next_due is None
        hourly = states["hourly"]
        assert hourly.next_due is not None and hourly.last_started_at is not None
        assert 3599 < (hourly.next_due - hourly.last_started_at).total_seconds() < 3601
    finally:
        service.close()


def test_metadata_loop_takes_organisations_in_turn(tmp_path: Path) -> None:
    meta = {"loop": "metadata", "timeout": "1m"}
    a = org_repo(tmp_path, "alpha", {"m1": (QUICK, meta), "m2": (QUICK, meta), "m3": (QUICK, meta)})
    b = org_repo(tmp_path, "beta", {"m1": (QUICK, meta), "m2": (QUICK, meta)})
    service = service_for(tmp_path, {"alpha": a, "beta": b})
    try:
        runs = sorted(service.once(), key=lambda r: r.started_at)
        assert [f"{r.codops}/{r.task}" for r in runs] == [
            "alpha/m1",
            "beta/m1",
            "alpha/m2",
            "beta/m2",
            "alpha/m3",
        ]
        assert {r.loop for r in runs} == {"metadata"}
    finally:
        service.close()


def test_closing_a_run_survives_database_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {})})
    service = service_for(tmp_path, {"alpha": repo})
    real, failures = service.store.finish_run, [1, 1]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            failures.pop()
            raise OperationalError("UPDATE runs ...", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(service.store, "finish_run", flaky)
    try:
        [run] = service.once()
        assert (run.status, failures) == (RunStatus.SUCCEEDED, [])
        assert service.store.running_runs() == []
    finally:
        service.close()


def test_state_on_postgresql(tmp_path: Path, postgres_admin_url: str) -> None:
    url = create_database(postgres_admin_url, "peach_service")
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {}), "broken": (FAIL, {})})
    service = service_for(tmp_path, {"alpha": repo}, state_url=url)
    try:
        assert sorted((r.task, r.status.value) for r in service.once()) == [
            ("broken", "FAILED"),
            ("ok", "SUCCEEDED"),
        ]
        assert service.store.engine.dialect.name == "postgresql"
    finally:
        service.close()
        drop_database(postgres_admin_url, "peach_service")


# -- HTTP ----------------------------------------------------------------------------------------------


def http(
    service: Service,
    path: str,
    method: str = "GET",
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.port}{path}", method=method, headers=headers or {}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_http_api(tmp_path: Path, running: list[Service]) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {}), "hang": (SLOW, {"timeout": "10m"})})
    service = service_for(tmp_path, {"alpha": repo})
    running.append(service)
    service.start()
    hang = wait_for(
        lambda: service.store.list_runs(codops="alpha", task="hang", status=RunStatus.RUNNING),
        30,
        "the hanging run",
    )[0]
    wait_for(lambda: b"sleeping" in http(service, f"/api/v1/runs/{hang.id}/log")[2], 30, "the log line")

    assert http(service, "/healthz")[0] == 200
    assert http(service, "/readyz")[0] == 200
    orgs = json.loads(http(service, "/api/v1/organisations")[2])
    assert [o["codops"] for o in orgs] == ["alpha"]
    tasks = json.loads(http(service, "/api/v1/organisations/alpha/tasks")[2])
    assert {t["task"]: t["state"] for t in tasks}["hang"] == "RUNNING"
    page = json.loads(http(service, "/api/v1/runs?codops=alpha&task=hang&limit=1")[2])
    assert page["runs"][0]["id"] == hang.id
    assert set(page["runs"][0]) >= SPEC_RUN_FIELDS
    assert http(service, "/api/v1/runs/r-nope")[0] == 404
    openapi = json.loads(http(service, "/api/v1/openapi.json")[2])
    assert "/api/v1/runs/{run_id}/log" in openapi["paths"]

    status, headers, body = http(service, f"/api/v1/runs/{hang.id}/log")
    size = len(body)
    status, headers, tail = http(service, f"/api/v1/runs/{hang.id}/log", headers={"Range": "bytes=5-"})
    assert (status, tail, headers["content-range"]) == (206, body[5:], f"bytes 5-{size - 1}/{size}")
    assert http(service, f"/api/v1/runs/{hang.id}/log", headers={"Range": f"bytes={size}-"})[0] == 416

    trigger = "/api/v1/organisations/alpha/tasks/ok/trigger"
    assert http(service, trigger, "POST")[0] == 401
    assert http(service, trigger, "POST", token="wrong")[0] == 401
    assert http(service, trigger, "POST", token=TOKEN)[0] == 202
    assert http(service, "/api/v1/organisations/alpha/tasks/nope/trigger", "POST", token=TOKEN)[0] == 404

    kill = f"/api/v1/runs/{hang.id}/kill"
    assert http(service, kill, "POST")[0] == 401
    assert http(service, kill, "POST", token=TOKEN)[0] == 202
    killed = wait_for(
        lambda: service.store.get_run(hang.id).status.final and service.store.get_run(hang.id), 30, "the kill"
    )
    assert (killed.status, killed.outcome) == (RunStatus.KILLED, "killed by SIGTERM: killed through the API")
    assert http(service, kill, "POST", token=TOKEN)[0] == 409


def test_mutations_are_refused_without_a_configured_token(tmp_path: Path, running: list[Service]) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {"enabled": False})})
    service = Service(load_config(write_config(tmp_path, {"alpha": repo})), environ={})
    running.append(service)
    service.start()
    wait_for(lambda: service.store.task_states("alpha"), 30, "the task list")
    status, _, body = http(service, "/api/v1/organisations/alpha/tasks/ok/trigger", "POST", token="anything")
    assert status == 403
    assert b"PEACH_TEST_TOKEN" in body


def test_real_prometheus_scrapes_the_service(tmp_path: Path, running: list[Service]) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {}), "broken": (FAIL, {})})
    service = service_for(tmp_path, {"alpha": repo})
    running.append(service)
    service.start()
    wait_for(
        lambda: len(service.store.list_runs(codops="alpha", status=RunStatus.FAILED)) >= 2, 60, "two passes"
    )
    service.request_stop()
    service.wait_stopped(30)
    expected = {
        status: len(service.store.list_runs(codops="alpha", status=status, limit=500))
        for status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
    }

    exposition = http(service, "/metrics")[2]
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False
    )
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")
    assert b'peach_runs_total{codops="alpha"' in exposition

    with prometheus_server(f"127.0.0.1:{service.port}", tmp_path) as prometheus:

        def counts() -> dict[str, float] | None:
            result = prometheus_query(prometheus, 'sum by (status) (peach_runs_total{codops="alpha"})')
            found = {r["metric"]["status"]: float(r["value"][1]) for r in result}
            return found if found == {s.value: float(n) for s, n in expected.items()} else None

        wait_for(counts, 60, f"Prometheus to report {expected}")
        builds = prometheus_query(prometheus, "peach_environment_builds_total")
        assert [(b["metric"]["result"], b["value"][1]) for b in builds] == [("ok", "1")]
        hits = prometheus_query(prometheus, "peach_environment_cache_hits_total")
        assert float(hits[0]["value"][1]) >= 3


def test_a_task_removed_from_the_repository_drops_its_series(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {}), "gone": (QUICK, {})})
    service = service_for(tmp_path, {"alpha": repo})
    try:
        service.once()
        tasks = {labels.get("task") for name, labels, _ in service.metrics.series() if "_task_" in name}
        assert tasks == {"ok", "gone"}
        commit(repo, tasks_files("alpha", {"ok": (QUICK, {})}), "remove a task")
        service.once()
        tasks = {labels.get("task") for name, labels, _ in service.metrics.series() if "_task_" in name}
        assert tasks == {"ok"}
    finally:
        service.close()


def test_yarn_addresses_and_log_server_default_from_the_clusters_yarn_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {})})
    path = write_config(tmp_path, {"alpha": repo})
    config = yaml.safe_load(path.read_text())
    config["spark"] = {"master": "yarn", "deploy_mode": "cluster"}
    path.write_text(yaml.safe_dump(config))
    write_configuration(tmp_path / "cluster")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path / "cluster" / "conf"))
    service = Service(load_config(path), environ={})
    try:
        assert service.yarn.resourcemanagers == ("http://127.0.0.1:8088",)
        assert service.yarn.log_server == "http://127.0.0.1:8188/ws/v1/applicationhistory"
        assert service.resourcemanager is not None
        assert service.resourcemanager.addresses == ["http://127.0.0.1:8088"]
        spark = service.runtime.executors["spark"]
        assert spark.yarn_options.log_server == service.yarn.log_server  # type: ignore[attr-defined]
        config["yarn"] = {
            "resourcemanagers": ["http://rm.example:8088"],
            "log_server": "http://jhs:19888/ws/v1/history",
        }
        path.write_text(yaml.safe_dump(config))
        mine = Service(load_config(path), environ={})
        assert (mine.yarn.resourcemanagers, mine.yarn.log_server) == (
            ("http://rm.example:8088",),
            "http://jhs:19888/ws/v1/history",
        )
        mine.close()
    finally:
        service.close()


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """The process's SIGTERM, SIGINT and SIGHUP handlers and wakeup fd, as they were, after the test."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(-1)


def test_stop_signals_are_counted_by_the_handler_and_taken_by_the_main_thread(signal_handlers: None) -> None:
    signals = StopSignals()
    assert not signals.wait(0)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    assert signals.wait(5) and signals.wait(5)  # one each, none lost
    assert not signals.wait(0)


def test_signals_delivered_to_another_thread_wake_the_main_thread(signal_handlers: None) -> None:
    """A process's signal may go to any of its threads; Python runs the handler in the main thread only
    once that thread runs Python code again. The main thread blocked in ``StopSignals.wait`` must wake:
    a SIGHUP taken by a loop thread reaches the reload thread, and a SIGTERM stops the service."""
    signals, triggers = StopSignals(), Triggers(None, interval=0.5)
    heard: list[str | None] = []

    def other_thread() -> None:
        signal.pthread_kill(threading.get_ident(), signal.SIGHUP)  # delivered to this thread
        deadline = time.monotonic() + 20
        while "SIGHUP" not in heard and time.monotonic() < deadline:
            heard.append(triggers.wait())
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert signals.wait(30), "the main thread did not wake for a signal taken by another thread"
        assert "SIGHUP" in heard
    finally:
        thread.join(30)
        triggers.close()


def test_loops_in_their_pause_hold_no_thread(tmp_path: Path, running: list[Service]) -> None:
    """40 organisations on ``loops.threads: 3``: at most 3 passes at once, every organisation served,
    and once all are in their pause the service holds far fewer threads than it has loops."""
    codops = [f"org{i:02d}" for i in range(40)]
    repos = {c: org_repo(tmp_path / "repos", c, {"ok": (QUICK, {"every": "1h"})}) for c in codops}
    service = service_for(tmp_path, repos, threads=3)
    running.append(service)
    service.start()
    peak = 0

    def every_organisation_ran() -> bool:
        nonlocal peak
        peak = max(peak, service.workers.threads)  # sampled while the first passes go
        return {run.codops for run in service.store.list_runs(limit=100) if run.status.final} == set(codops)

    wait_for(every_organisation_ran, 120, "a run of every organisation")
    assert 1 <= peak <= 3
    wait_for(lambda: service.workers.threads <= 3, 10, "the workers to be at most the limit")
    assert threading.active_count() < 20  # not one per loop (41 loops)
