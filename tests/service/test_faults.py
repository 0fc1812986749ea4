"""Faults in the outside world, against the real service: git server down, slow and flapping; the
workspace's disk full; PostgreSQL restarted mid-run; the YARN ResourceManager failing over, answering
500s, timing out; uv failing. In each, the service keeps serving the API and the other loops, reports the
fault in metrics and run history, and recovers by itself (tests/fault_scenarios.py drives them;
``bench/faults.py`` prints their figures).
"""

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from executors.logs import CappedLog, LogLimits
from scheduler.config import load_config
from scheduler.runs.artifacts import ArtifactPolicy, settle
from scheduler.service.service import Service
from scheduler.status import RunStatus
from scheduler.store.store import Store
from tests.helpers.fault_scenarios import (
    database_restart,
    disk_full,
    git_server,
    metric,
    resourcemanager,
    uv_failing,
)
from tests.helpers.faultkit import fill, small_disk
from tests.helpers.orgs import QUICK, org_repo, write_config

pytestmark = pytest.mark.faults

OK = RunStatus.SUCCEEDED


@pytest.mark.parametrize("kind", ["down", "slow", "flapping"])
def test_git_server_fault_keeps_the_last_good_checkout_and_other_organisations_running(
    tmp_path: Path, kind: str
) -> None:
    report = git_server(tmp_path, kind)
    facts = report.facts
    assert set(facts["alpha"]) == {OK}, "alpha ran on its last good checkout, without failing"
    assert facts["beta"] and set(facts["beta"]) == {OK}
    assert re.search(
        r"not the branch head: fetch failed: .*serving last good commit [0-9a-f]{12}", facts["stale_outcome"]
    )
    assert any("fetch failed" in problem for problem in facts["problems"]), facts["problems"]
    assert facts["peak_failures"] >= 1 and facts["failed_syncs"] >= 1
    assert set(facts["codes"]) == {200}, facts["codes"]
    assert facts["loops_alive"] and report.recovered


def test_disk_full_fails_runs_clearly_and_recovers_when_space_is_freed(tmp_path: Path) -> None:
    report = disk_full(tmp_path)
    facts = report.facts
    for status, outcome in facts["outcomes"]:  # each run either succeeded or says why not
        assert status is OK or "No space left on device" in outcome, (status, outcome)
    assert any(status is RunStatus.FAILED for status, _ in facts["outcomes"])
    assert facts["truncated"], "the chatty task started with some room left and filled the disk"
    for status, outcome, log_exists in facts["truncated"]:  # a log cut short: the run still ends honestly
        assert status is OK and outcome.startswith("exit code 0; log incomplete: ") and log_exists
    assert "line 05999" in facts["after_log"]  # whole logs again once space is back
    assert set(facts["codes"]) == {200}, facts["codes"]
    assert facts["loops_alive"] and report.recovered


def test_database_restart_mid_run_records_the_run_and_answers_503_meanwhile(tmp_path: Path) -> None:
    report = database_restart(tmp_path)
    facts = report.facts
    record = facts["record"]
    assert (record.status, record.outcome) == (OK, "exit code 0")
    assert record.finished_at is not None and (record.handle or "").startswith("pid:")
    assert 500 not in facts["codes"] and facts["codes"].get(503), facts["codes"]
    assert facts["codes"].get(200), "/healthz answers while the database is down"
    assert (facts["ready_down"], facts["metrics_down"]) == (503, 200)
    assert facts["errors"]["api"] >= 1 and facts["errors"]["run"] >= 1
    assert facts["loops_alive"] and report.recovered


@pytest.mark.parametrize("kind", ["failover", "errors", "timeouts"])
def test_resourcemanager_fault_keeps_the_yarn_run_tracked(tmp_path: Path, kind: str) -> None:
    report = resourcemanager(tmp_path, kind)
    facts = report.facts
    assert facts["during"] is RunStatus.RUNNING
    record = facts["record"]
    assert (record.status, record.outcome) == (
        OK,
        f"YARN application {record.application_id} finished: SUCCEEDED",
    )
    assert facts["beta"] and set(facts["beta"]) == {OK}
    assert set(facts["codes"]) == {200}, facts["codes"]
    if kind == "failover":
        assert facts["failovers"] >= 1 and facts["errors"] == 0
        assert facts["active"] == facts["rm2"]
    else:
        assert facts["errors"] >= 2
        assert (
            "unknown, still following it: YARN: applications tagged peach: no ResourceManager" in facts["log"]
        )
        assert re.search(r"the ResourceManager answers again after \d+\.\d s", facts["log"])
    # bounded: at most retries (2) x ResourceManagers (2) requests per poll, one poll per 0.2 s, plus
    # the client's /cluster checks
    assert facts["requests_per_second"] < 60, facts["requests_per_second"]


def test_uv_failing_fails_the_run_with_the_installer_error_and_backs_off(tmp_path: Path) -> None:
    report = uv_failing(tmp_path)
    facts = report.facts
    assert all(
        outcome.startswith("not started: could not install 'peachfault==1.0': ")
        for outcome in facts["outcomes"]
    )
    # one run per build attempt: while the build backs off no run is recorded, the task is PENDING
    assert not any("next try" in outcome for outcome in facts["outcomes"]), facts["outcomes"]
    assert all(log and "could not install 'peachfault==1.0'" in log for log in facts["logs"]), facts["logs"]
    assert facts["builds_failed"] >= facts["attempts"]
    assert re.fullmatch(
        r"environment failing: could not install 'peachfault==1\.0': .* \(failed \d+ time\(s\)\); "
        r"next try at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
        facts["pending_reason"],
        re.DOTALL,
    ), facts["pending_reason"]
    assert facts["others"] and set(facts["others"]) == {OK}
    assert "from the index" in facts["after_log"]
    assert set(facts["codes"]) == {200}, facts["codes"]
    assert report.recovered


# -- the fixes, one by one -----------------------------------------------------------------------------


def test_a_log_on_a_full_disk_is_cut_short_and_says_why(tmp_path: Path) -> None:
    log = CappedLog(Path("/dev/full"), LogLimits(head_bytes=1024, tail_bytes=1024, flush_interval=0))
    log.note("run r-1: task alpha/chatty")  # /dev/full: every write fails with ENOSPC
    for i in range(100):
        log.output(f"line {i}\n".encode())
    log.close()
    assert log.failure == "[Errno 28] No space left on device"
    assert log.dropped == log.total > 0


def test_a_finished_log_on_a_full_disk_stays_plain_and_complete(tmp_path: Path) -> None:
    """Settling a run (its note, then compression) on a full disk keeps the plain log, never raises."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        store = Store.from_url(f"sqlite:///{tmp_path / 'state.db'}")
        log = disk / "output.log"
        log.write_text("2026-01-01T00:00:00.000Z the run's output\n")
        run = store.start_run("alpha", "ok", loop="alpha", executor="python", version=None, log_path=str(log))
        store.set_artifacts_dir(run.id, None, "no artifacts directory: say so in the log")
        fill(disk)
        assert settle(store, run.id, ArtifactPolicy()) is None
        assert store.get_run(run.id).log_path == str(log)
        assert log.read_text().startswith("2026-01-01T00:00:00.000Z the run's output\n")  # (+ the note)
        assert not list(disk.glob("*.gz")) and not list(disk.glob(".*partial"))
        store.close()


def test_a_run_goes_on_when_recording_its_pid_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {})})
    service = Service(load_config(write_config(tmp_path, {"alpha": repo})), environ={})
    real, failures = service.store.attach, [1, 1, 1]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            failures.pop()
            raise OperationalError("UPDATE runs ...", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(service.store, "attach", flaky)
    service.runtime.poll = 0.05
    try:
        [run] = service.once()
        assert (run.status, run.outcome, failures) == (OK, "exit code 0", [])
        assert (run.handle or "").startswith("pid:") and run.log_path is not None
        assert metric(service, "peach_state_database_errors_total", source="run") == 3
    finally:
        service.close()


def test_the_metadata_loop_logs_a_state_database_error_in_one_line_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    metadata = (QUICK, {"loop": "metadata"})
    repos = {codops: org_repo(tmp_path, codops, {"fetch": metadata}) for codops in ("alpha", "beta")}
    service = Service(load_config(write_config(tmp_path, repos)), environ={})
    real = service.store.start_run

    def down_for_alpha(codops: str, *args: Any, **kwargs: Any) -> Any:
        if codops == "alpha":
            raise OperationalError("INSERT INTO runs ...", {}, Exception("server closed the connection"))
        return real(codops, *args, **kwargs)

    monkeypatch.setattr(service.store, "start_run", down_for_alpha)
    caplog.set_level(logging.WARNING, logger="scheduler.service.loops")
    try:
        runs = service.once()
        assert [(run.codops, run.status) for run in runs] == [("beta", OK)], "beta's task still ran"
        assert metric(service, "peach_state_database_errors_total", source="loop") == 1
        [record] = [r for r in caplog.records if r.name == "scheduler.service.loops"]
        assert (record.levelno, record.exc_info) == (logging.WARNING, None)
        message = record.getMessage()
        assert message.startswith("loop metadata: alpha/fetch not run, the state database does not answer: ")
        assert "server closed the connection" in message and "Traceback" not in caplog.text
    finally:
        service.close()
