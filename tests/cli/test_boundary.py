"""The CLI boundary: one exit-code table, ``--json`` on every data command, errors as JSON, in-process.

A real state database (SQLite in the test's workspace) holds three runs of ``alpha/report``: two with a
manifest (``ok``, ``ok2``) and one without (``bare``).
"""

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli.main import main
from scheduler.config import load_config
from scheduler.service import logconfig
from scheduler.status import RunStatus
from scheduler.store.records import Manifest
from scheduler.store.store import Store
from tests.helpers.orgs import FAIL, QUICK, org_repo, write_config
from tests.helpers.repos import write_repo

LOG = "first line\nsecond line é\n"
LOGGED = {"status": "SUCCEEDED", "log": LOG}


@dataclass
class State:
    config: Path
    repo: Path
    ids: dict[str, str]  # ok, ok2, bare
    store: Store

    def args(self, *args: str) -> list[str]:
        """``args`` with ``{ok}``-style run ids filled in and ``--config`` added."""
        return [arg.format(repo=self.repo, **self.ids) for arg in args] + ["--config", str(self.config)]


def manifest(run_id: str, runner: str) -> Manifest:
    return Manifest(
        run_id=run_id,
        recorded_at=datetime.now(UTC),
        commit="0123456789abcdef",
        runner=runner,
        requirements=(),
        frozen=(),
        spark=None,
        args={},
        definition_file="peach.yaml",
        definition="report: {notebook: code/report.py, method: main}\n",
    )


def add_run(store: Store, log: Path, status: RunStatus | None, runner: str | None) -> str:
    log.write_text(LOG)
    run = store.start_run(
        "alpha", "report", loop="alpha", executor="python", version="0123456789abcdef", log_path=str(log)
    )
    if runner is not None:
        store.save_manifest(manifest(run.id, runner))
    if status is not None:
        store.finish_run(run.id, status, "exit code 0" if status is RunStatus.SUCCEEDED else "exit code 1")
    return run.id


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    config = write_config(tmp_path, {})
    store = Store.from_url(load_config(config).database_url)
    ids = {
        name: add_run(store, tmp_path / f"{name}.log", status, runner)
        for name, status, runner in (
            ("ok", RunStatus.SUCCEEDED, "print('a')\n"),
            ("ok2", RunStatus.SUCCEEDED, "print('b')\n"),
            ("bare", RunStatus.FAILED, None),
        )
    }
    try:
        yield State(config, write_repo(tmp_path / "repo", {}), ids, store)
    finally:
        store.close()


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("workspace: /tmp\nloops:\n  nope: 1\n")
    return path


# (arguments, exit code); --config is added to each
EXIT_CODES = [
    (["tasks"], 0),
    (["tasks", "--codops", "alpha"], 0),
    (["runs"], 0),
    (["runs", "--limit", "1"], 0),
    (["runs", "--limit", "500"], 0),
    (["runs", "--status", "FAILED"], 0),
    (["runs", "--limit", "0"], 2),
    (["runs", "--limit", "501"], 2),
    (["runs", "--limit", "ten"], 2),
    (["runs", "--status", "DONE"], 2),
    (["runs", "show", "{ok}"], 0),
    (["runs", "show", "{bare}"], 0),
    (["runs", "show", "r-nope"], 1),
    (["runs", "show"], 2),
    (["runs", "keep", "{ok}"], 0),
    (["runs", "keep", "{ok}", "--unset"], 0),
    (["runs", "keep", "r-nope"], 1),
    (["logs", "{ok}"], 0),
    (["logs", "r-nope"], 1),
    (["logs"], 2),
    (["trigger", "alpha/report"], 0),
    (["trigger", "alpha/nope"], 1),
    (["trigger", "alpha"], 2),
    (["diff", "{ok}", "{ok2}"], 0),
    (["diff", "{ok}", "{bare}"], 1),  # no manifest
    (["diff", "{ok}", "r-nope"], 1),
    (["rerun", "{bare}"], 1),  # no manifest
    (["rerun", "{ok}"], 1),  # alpha is not in the configuration
    (["rerun", "r-nope"], 1),
    (["config", "show"], 0),
    (["queues", "render"], 0),
    (["validate", "{repo}"], 1),  # the configuration has no organisation: codops chrts is not allowed
    (["validate", "{repo}", "--codops", "chrts"], 0),
    (["validate", "{repo}/missing"], 2),
    (["tasks", "--no-such-flag"], 2),
]


@pytest.mark.parametrize(("args", "code"), EXIT_CODES, ids=[" ".join(a) for a, _ in EXIT_CODES])
def test_exit_codes(state: State, args: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(state.args(*args)) == code
    out, err = capsys.readouterr()
    assert (err == "") if code == 0 else (err or "error" in out), (out, err)  # a failure says why


# every command that reads the operator configuration
CONFIGURED = [
    ["tasks"],
    ["runs"],
    ["runs", "show", "r-1"],
    ["runs", "keep", "r-1"],
    ["logs", "r-1"],
    ["trigger", "alpha/report"],
    ["rerun", "r-1"],
    ["diff", "r-1", "r-2"],
    ["once"],
    ["run"],
    ["config", "show"],
    ["queues", "check"],
    ["queues", "render"],
    ["validate", "{repo}"],
]
WITH_JSON = [args for args in CONFIGURED if args != ["run"]]


@pytest.mark.parametrize("args", CONFIGURED, ids=" ".join)
def test_a_bad_configuration_exits_two_with_its_file_and_line(
    state: State, bad_config: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*state.args(*args)[:-1], str(bad_config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{bad_config}:3: loops.nope" in err


@pytest.mark.parametrize("args", WITH_JSON, ids=" ".join)
def test_errors_are_json_with_json(
    state: State, bad_config: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*state.args(*args, "--json")[:-1], str(bad_config)]) == 2
    out, err = capsys.readouterr()
    error = json.loads(out)
    assert set(error) == {"error", "exit_code"} and error["exit_code"] == 2 and err == ""
    assert f"{bad_config}:3: loops.nope: unknown key 'nope'" in error["error"]


def test_demo_with_a_bad_configuration_exits_two(
    bad_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEACH_WORKSPACE", str(tmp_path / "demo"))  # demo sets it: undone after the test
    assert main(["demo", "--workspace", str(tmp_path / "demo"), "--config", str(bad_config)]) == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["runs", "show", "r-nope"], 1, "no run 'r-nope'"),
        (["runs", "keep", "r-nope"], 1, "no run 'r-nope'"),
        (["logs", "r-nope"], 1, "no run 'r-nope'"),
        (["trigger", "alpha/nope"], 1, "no task alpha/nope"),
        (["rerun", "{bare}"], 1, "manifest"),
        (["diff", "{ok}", "r-nope"], 1, "no run 'r-nope'"),
        (["runs", "--limit", "0"], 2, "argument --limit: expected a whole number from 1 to 500, got '0'"),
        (["trigger", "alpha"], 2, "expected CODOPS/TASK, got 'alpha'"),
        (["tasks", "--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
        (["validate", "{repo}/missing"], 2, "missing: not a directory"),
    ],
)
def test_not_found_and_usage_errors_as_json_and_as_text(
    state: State, args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(state.args(*args, "--json")) == code
    out, err = capsys.readouterr()
    error = json.loads(out)
    assert error["exit_code"] == code and message in error["error"] and err == ""
    assert main(state.args(*args)) == code
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.startswith(("peach-scheduler", "usage: peach-scheduler"))


def test_text_errors_name_the_command(state: State, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(state.args("runs", "show", "r-nope")) == 1
    assert capsys.readouterr().err == "peach-scheduler runs show: no run 'r-nope'\n"


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["tasks"], lambda data, s: [t["task"] for t in data] == ["report"]),
        (["runs"], lambda data, s: {r["id"] for r in data} == set(s.ids.values())),
        (["runs", "--limit", "1"], lambda data, s: len(data) == 1 and data[0]["id"] in s.ids.values()),
        (["runs", "show", "{ok}"], lambda data, s: data["manifest"]["runner"] == "print('a')\n"),
        (
            ["runs", "show", "{bare}"],
            lambda data, s: data["id"] == s.ids["bare"] and data["manifest"] is None,
        ),
        (["runs", "keep", "{ok}"], lambda data, s: data["id"] == s.ids["ok"] and data["keep"] is True),
        (["runs", "keep", "{ok}", "--unset"], lambda data, s: data["keep"] is False),
        (
            ["logs", "{ok}"],
            lambda data, s: data == {"id": s.ids["ok"], "codops": "alpha", "task": "report"} | LOGGED,
        ),
        (["trigger", "alpha/report"], lambda data, s: (data["codops"], data["task"]) == ("alpha", "report")),
        (["diff", "{ok}", "{ok2}"], lambda data, s: isinstance(data, dict) and data),
        (["config", "show"], lambda data, s: data["organisations"] == {}),
        (["queues", "render"], lambda data, s: data["xml"].startswith("<configuration>")),
        (["validate", "{repo}", "--codops", "chrts"], lambda data, s: data["ok"] is True),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_every_data_command_prints_json(
    state: State, args: list[str], check: Callable[[Any, State], bool], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(state.args(*args, "--json")) == 0
    assert check(json.loads(capsys.readouterr().out), state)


def test_json_goes_where_the_command_is(state: State, capsys: pytest.CaptureFixture[str]) -> None:
    """``runs --json show RUN`` and ``runs show RUN --json`` agree (the subcommand inherits the option)."""
    main(["runs", "--json", "--config", str(state.config), "show", state.ids["ok"]])
    before = json.loads(capsys.readouterr().out)
    main(state.args("runs", "show", "{ok}", "--json"))
    assert json.loads(capsys.readouterr().out) == before


def test_text_output_is_unchanged(state: State, capsys: pytest.CaptureFixture[str]) -> None:
    main(state.args("trigger", "alpha/report"))
    assert capsys.readouterr().out == "alpha/report will run at the next pass of loop alpha\n"
    main(state.args("runs", "keep", "{ok}"))
    assert capsys.readouterr().out == f"run {state.ids['ok']}: artifacts kept whatever the retention\n"
    main(state.args("tasks"))
    assert capsys.readouterr().out.splitlines()[0].split() == [
        "CODOPS",
        "TASK",
        "LOOP",
        "EXECUTOR",
        "STATE",
        "LAST_STATUS",
        "LAST_STARTED_AT",
        "LAST_DURATION_SECONDS",
        "WHY",  # issue 19: why INVALID or PENDING, else the last run's error
    ]


def test_logs_follow_as_json_lines(state: State, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "running.log"
    run_id = add_run(state.store, log, None, None)

    def finish() -> None:
        with log.open("a") as out:
            out.write("third line\n")
        state.store.finish_run(run_id, RunStatus.SUCCEEDED, "exit code 0")

    later = threading.Timer(0.3, finish)  # usually while the command follows; the checks hold either way
    later.start()
    try:
        assert main(state.args("logs", run_id, "-f", "--json")) == 0
    finally:
        later.join()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "".join(line["log"] for line in lines) == LOG + "third line\n"
    assert [line["status"] for line in lines][-1] == "SUCCEEDED"
    assert all(line["status"] == "RUNNING" for line in lines[:-1]) and {line["id"] for line in lines} == {
        run_id
    }


def test_validate_uses_the_configured_organisations(
    state: State, tmp_path: Path, bad_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "others").mkdir()
    (tmp_path / "ours").mkdir()
    others = write_config(tmp_path / "others", {"sesr": tmp_path})
    assert main(["validate", str(state.repo), "--config", str(others)]) == 1
    assert "may not schedule tasks for codops 'chrts' (allowed: sesr)" in capsys.readouterr().out
    assert main(["validate", str(state.repo), "--config", str(others), "--codops", "chrts"]) == 0
    ours = write_config(tmp_path / "ours", {"chrts": tmp_path, "sesr": tmp_path})
    assert main(["validate", str(state.repo), "--config", str(ours)]) == 0
    assert main(["validate", str(state.repo)]) == 0  # no --config: any codops ($PEACH_CONFIG is not read)
    capsys.readouterr()
    assert main(["validate", str(state.repo), "--config", str(bad_config)]) == 2
    assert f"{bad_config}:3: loops.nope" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["validate"],
        ["config"],
        ["config", "show"],
        ["run"],
        ["demo"],
        ["once"],
        ["tasks"],
        ["runs"],
        ["runs", "show"],
        ["runs", "keep"],
        ["logs"],
        ["trigger"],
        ["rerun"],
        ["diff"],
        ["queues"],
        ["queues", "check"],
        ["queues", "render"],
    ],
    ids=" ".join,
)
def test_help_everywhere(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*args, "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: peach-scheduler")


def test_runs_limit_help_says_what_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    main(["runs", "--help"])
    assert "1 to 500 (default 20)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("args", [[], ["config"], ["queues"]], ids=lambda a: " ".join(a) or "none")
def test_a_command_group_alone_prints_its_help_and_exits_two(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert "usage: peach-scheduler" in capsys.readouterr().out


def test_once_exits_one_when_a_run_failed_and_rerun_prints_its_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logconfig, "configure_logging", lambda level=None: None)  # pytest owns logging
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {}), "bad": (FAIL, {})})
    config = ["--config", str(write_config(tmp_path, {"alpha": repo}))]
    assert main(["once", *config, "--json"]) == 1
    runs = {run["task"]: run for run in json.loads(capsys.readouterr().out)}
    assert (runs["ok"]["status"], runs["bad"]["status"]) == ("SUCCEEDED", "FAILED")
    assert main(["rerun", runs["ok"]["id"], *config, "--json"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert (request["task"], request["rerun_of"], request["requested_by"]) == ("ok", runs["ok"]["id"], "cli")
    assert main(["rerun", runs["ok"]["id"], *config]) == 0
    assert f"run {runs['ok']['id']} of alpha/ok will run again at commit" in capsys.readouterr().out


def test_python_dash_m_scheduler_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: peach-scheduler")


def test_config_show_says_where_the_yarn_endpoints_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import main
    from tests.helpers.hadoop import write_configuration

    write_configuration(tmp_path / "cluster")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path / "cluster" / "conf"))
    path = tmp_path / "peach.yaml"
    path.write_text(f"workspace: {tmp_path}\nyarn:\n  log_server: http://jhs:19888/ws/v1/history\n")
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["effective_yarn"]
    site = f"yarn-site.xml ({tmp_path / 'cluster' / 'conf' / 'yarn-site.xml'})"
    assert shown["resourcemanagers"] == {"value": ["http://127.0.0.1:8088"], "from": site}
    assert shown["log_server"] == {
        "value": "http://jhs:19888/ws/v1/history",
        "from": "the operator configuration",
    }
