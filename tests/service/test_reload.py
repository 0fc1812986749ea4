"""Live reconfiguration of a running service: real git repositories, real child processes, real HTTP.

An organisation joins, one leaves while its run goes on, one's repository moves, while a third's long run
goes on untouched; an invalid file changes nothing and says why; SIGHUP and a change of the file on disk
reload too."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.config import load_config
from scheduler.service.reload import Triggers
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.backends import wait_for
from tests.helpers.orgs import log_text, org_repo, write_config

TOKEN = "reload-token-for-tests"
SLEEPS = (
    "import os, time\n\n"
    "def main(seconds):\n"
    "    print('pid', os.getpid(), flush=True)\n"
    "    time.sleep(seconds)\n"
)


def says(words: str) -> str:
    return f"def main():\n    print({words!r})\n"


def post(service: Service, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{service.port}{path}", method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (http on loopback)
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(service: Service, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}{path}", timeout=30) as answer:
        return json.loads(answer.read())


def configure(path: Path, repos: dict[str, Path], **extra: Any) -> None:
    """Rewrite the configuration file at ``path`` with these organisations (and top-level ``extra``)."""
    config = yaml.safe_load(path.read_text())
    config["organisations"] = {
        codops: {"repositories": [{"url": str(repo)}]} for codops, repo in repos.items()
    }
    config.update(extra)
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Service]]:
    services: list[Service] = []
    yield services
    for service in services:
        service.request_force_stop()
        service.wait_stopped(30)
        service.close()


def runs_of(service: Service, codops: str) -> list[Any]:
    return service.store.list_runs(codops=codops, limit=100)


def running(service: Service, codops: str) -> Any:
    return next((r for r in runs_of(service, codops) if r.status is RunStatus.RUNNING and r.handle), None)


def closed(service: Service, run_id: str) -> Any:
    run = service.store.get_run(run_id)
    return run if run.status.final else None


def logged(service: Service, codops: str, words: str) -> bool:
    return any(words in log_text(run) for run in runs_of(service, codops) if run.log_path)


def succeeded(service: Service, codops: str) -> bool:
    return any(run.status is RunStatus.SUCCEEDED for run in runs_of(service, codops))


@pytest.mark.slow
def test_organisations_join_leave_and_move_while_another_run_goes_on(
    tmp_path: Path, started: list[Service]
) -> None:
    once: dict[str, object] = {"every": "1h"}
    repos = {
        "keep": org_repo(tmp_path, "keep", {"long": (SLEEPS, {**once, "args": {"seconds": 8}})}),
        "leave": org_repo(tmp_path, "leave", {"work": (SLEEPS, {"args": {"seconds": 3}})}),
        "move": org_repo(tmp_path / "a", "move", {"hello": (says("from the first repository"), once)}),
    }
    path = write_config(tmp_path, repos)
    service = Service(load_config(path), environ={"PEACH_TEST_TOKEN": TOKEN}, config_path=path)
    started.append(service)
    service.start()
    long_run = wait_for(lambda: running(service, "keep"), 60, "the long run of keep")
    leaving = wait_for(lambda: running(service, "leave"), 60, "a run of leave")
    wait_for(lambda: runs_of(service, "move"), 60, "a run of move")

    moved = org_repo(tmp_path / "b", "move", {"hello": (says("from the second repository"), {})})
    joined = org_repo(tmp_path, "join", {"hi": (says("joined"), once)})
    http = {**yaml.safe_load(path.read_text())["http"], "port": 1}
    configure(path, {"keep": repos["keep"], "move": moved, "join": joined}, http=http)
    status, answer = post(service, "/api/v1/admin/reload")
    assert status == 200 and answer["result"] == "applied", answer
    assert "organisation join added" in answer["changes"]
    assert "organisation leave removed (its running run finishes; no new run)" in answer["changes"]
    assert "organisation move: repositories changed" in answer["changes"]
    assert answer["restart_needed"] == ["http.port"]

    wait_for(lambda: succeeded(service, "join"), 60, "join's run")
    wait_for(lambda: logged(service, "move", "from the second repository"), 60, "move's new repository")
    left = wait_for(lambda: closed(service, leaving.id), 30, "leave's run")
    assert left.status is RunStatus.SUCCEEDED, left.outcome  # finished, never killed
    leave_loop = next(loop for loop in service.loops if loop.loop_name == "leave")
    wait_for(lambda: not leave_loop.is_alive(), 30, "the loop of leave to stop")
    assert [r.id for r in runs_of(service, "leave")] == [leaving.id]  # no new run
    assert all(t.codops != "leave" for t in service.store.task_states())

    done = wait_for(lambda: closed(service, long_run.id), 60, "the long run")
    assert done.status is RunStatus.SUCCEEDED and done.handle == long_run.handle  # the same process
    assert f"pid {long_run.handle.removeprefix('pid:')}" in log_text(done)

    # an invalid file changes nothing, and says why in the API and the metrics
    path.write_text(path.read_text() + "capacity:\n  local_run: 2\n")
    status, answer = post(service, "/api/v1/admin/reload")
    assert status == 200 and answer["result"] == "invalid"
    assert "capacity.local_run: unknown key 'local_run' (did you mean 'local_runs'?)" in answer["error"]
    assert get(service, "/api/v1/admin/reload") == answer
    assert set(service.organisations) == {"keep", "move", "join"}
    series = service.metrics.series()
    reloads = {labels["result"]: v for name, labels, v in series if name == "peach_config_reloads_total"}
    assert reloads == {"applied": 1.0, "invalid": 1.0}
    assert post(service, "/api/v1/admin/reload", token=None)[0] == 401


def reloaded(service: Service, source: str) -> bool:
    return service.last_reload is not None and service.last_reload.source == source


@pytest.mark.slow
def test_sighup_and_a_changed_file_reload(tmp_path: Path, started: list[Service]) -> None:
    repos = {"first": org_repo(tmp_path, "first", {"hi": (says("first"), {"every": "1h"})})}
    path = write_config(tmp_path, repos)
    service = Service(load_config(path), environ={}, config_path=path)
    started.append(service)
    previous = signal.getsignal(signal.SIGHUP)
    try:
        service.start()
        service.watch_config(Triggers(path, interval=0.1))
        second = org_repo(tmp_path, "second", {"hi": (says("second"), {"every": "1h"})})
        configure(path, {**repos, "second": second})  # as a ConfigMap update would
        wait_for(lambda: reloaded(service, "file change"), 30, "a reload")
        assert service.last_reload is not None and service.last_reload.result == "applied"
        wait_for(lambda: succeeded(service, "second"), 60, "its run")
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: reloaded(service, "SIGHUP"), 30, "a SIGHUP reload")
        assert service.last_reload is not None and service.last_reload.result == "unchanged"
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.slow
def test_the_running_command_reloads_on_sighup(tmp_path: Path) -> None:
    """``peach-scheduler run`` as operators start it: SIGHUP reloads, the service goes on, SIGTERM stops."""
    repos = {"first": org_repo(tmp_path, "first", {"hi": (says("first"), {"every": "1h"})})}
    path = write_config(tmp_path, repos)
    output = tmp_path / "service.log"
    with output.open("wb") as sink:
        service = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.main", "run", "--config", str(path), "--port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        found = wait_for(
            lambda: re.search(r"dashboard (http://127\.0\.0\.1:\d+)/", output.read_text()), 60, "listen"
        )
        base = found.group(1)
        service.send_signal(signal.SIGHUP)

        def last() -> Any:
            with urllib.request.urlopen(f"{base}/api/v1/admin/reload", timeout=10) as answer:  # noqa: S310
                return json.loads(answer.read())

        answer = wait_for(last, 30, "the SIGHUP reload")
        assert (answer["source"], answer["result"], answer["restart_needed"]) == ("SIGHUP", "unchanged", [])
        assert service.poll() is None  # SIGHUP did not end it (the default action would have)
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
