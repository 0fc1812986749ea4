"""The service as operators run it: a real ``peach-scheduler`` process, real signals, ``kill -9``."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from executors.process import find_run_processes
from scheduler.config import load_config
from scheduler.status import RunStatus
from scheduler.store.store import Store
from tests.conftest import start_service
from tests.helpers.backends import wait_for
from tests.helpers.orgs import FAIL, FAMILY, QUICK, SPEC_RUN_FIELDS, org_repo, write_config

SHORT = (
    "import time\n\ndef main():\n    print('working', flush=True)\n    time.sleep(3)\n    print('finished')\n"
)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_restart_after_kill_9_leaves_no_run_running_and_no_orphan(tmp_path: Path, services: list) -> None:
    repo = org_repo(tmp_path, "alpha", {"family": (FAMILY, {})})
    config = write_config(tmp_path, {"alpha": repo})
    store = Store.from_url(load_config(config).database_url)
    services.append(first := start_service(config, tmp_path / "service.log"))
    run = wait_for(
        lambda: [r for r in store.running_runs() if r.handle], 60, "a running run with its pid handle"
    )[0]
    wait_for(lambda: len(find_run_processes(run.id)) >= 3, 30, "the task, its children and the setsid one")

    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert len(find_run_processes(run.id)) >= 3  # orphans: what recovery must find

    services.append(second := start_service(config, tmp_path / "service.log"))
    lost = wait_for(lambda: store.get_run(run.id).status.final and store.get_run(run.id), 60, "recovery")
    assert lost.status is RunStatus.LOST
    assert "the scheduler restarted while this run was going" in (lost.outcome or "")
    assert lost.artifacts_state == "kept" and (lost.log_path or "").endswith("output.log.gz")  # settled too
    assert find_run_processes(run.id) == set()
    second.send_signal(signal.SIGTERM)
    wait_for(lambda: "no new runs" in (tmp_path / "service.log").read_text(), 30, "the SIGTERM to be handled")
    second.send_signal(signal.SIGTERM)  # and kill the family's next run, if it started
    assert second.wait(60) == 0
    assert store.running_runs() == []
    store.close()


def test_first_sigterm_drains_second_kills(tmp_path: Path, services: list) -> None:
    repo = org_repo(tmp_path, "alpha", {"short": (SHORT, {})})
    config = write_config(tmp_path, {"alpha": repo}, drain="5m")
    store = Store.from_url(load_config(config).database_url)

    services.append(service := start_service(config, tmp_path / "a.log"))
    run = wait_for(lambda: store.running_runs(), 60, "a running run")[0]
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0
    assert store.get_run(run.id).status is RunStatus.SUCCEEDED  # drained: it finished its work
    assert len(store.list_runs(codops="alpha")) == 1  # and no new run started

    services.append(service := start_service(config, tmp_path / "b.log"))
    run = wait_for(lambda: store.running_runs(), 60, "a running run")[0]
    service.send_signal(signal.SIGTERM)
    # signals of one kind do not queue: send the second once the first was handled
    wait_for(lambda: "no new runs" in (tmp_path / "b.log").read_text(), 30, "the first SIGTERM to be handled")
    service.send_signal(signal.SIGTERM)
    assert service.wait(60) == 0
    killed = store.get_run(run.id)
    assert (killed.status, killed.outcome) == (
        RunStatus.KILLED,
        "killed by SIGTERM: the scheduler is stopping",
    )
    store.close()


def test_once_tasks_runs_logs_and_trigger_commands(tmp_path: Path) -> None:
    repo = org_repo(
        tmp_path, "alpha", {"ok": (QUICK, {}), "broken": (FAIL, {}), "off": (QUICK, {"enabled": False})}
    )
    config = write_config(tmp_path, {"alpha": repo})

    once = cli(config, "once", "--json")
    assert once.returncode == 1  # a run failed
    runs = json.loads(once.stdout)
    assert sorted((r["task"], r["status"]) for r in runs) == [("broken", "FAILED"), ("ok", "SUCCEEDED")]

    listed = json.loads(cli(config, "runs", "--json", "--codops", "alpha", "--task", "ok").stdout)
    assert [r["id"] for r in listed] == [r["id"] for r in runs if r["task"] == "ok"]
    assert set(listed[0]) >= SPEC_RUN_FIELDS

    tasks = {t["task"]: t for t in json.loads(cli(config, "tasks", "--json").stdout)}
    assert (tasks["broken"]["state"], tasks["broken"]["last_status"]) == ("FINISHED", "FAILED")
    assert (tasks["off"]["state"], tasks["off"]["last_status"]) == ("PENDING", None)

    broken = next(r for r in runs if r["task"] == "broken")
    logs = cli(config, "logs", broken["id"])
    assert "RuntimeError: boom" in logs.stdout
    assert cli(config, "logs", "r-nope").returncode == 1

    assert cli(config, "trigger", "alpha/off").returncode == 0
    assert cli(config, "trigger", "alpha/nope").returncode == 1
    again = cli(config, "once", "--json")
    assert "off" in {r["task"] for r in json.loads(again.stdout)}

    table = cli(config, "runs", "--limit", "2")
    assert table.returncode == 0 and table.stdout.startswith("ID ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("workspace: [\n")
    assert cli(bad, "tasks").returncode == 2
