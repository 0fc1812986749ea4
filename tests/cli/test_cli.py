"""``peach-scheduler validate`` and ``demo`` as task authors and operators call them: a real process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.config import load_config
from scheduler.status import RunStatus
from scheduler.store.store import Store
from tests.helpers.backends import wait_for
from tests.helpers.repos import write_repo

BROKEN = "codops: chrts\ntasks:\n  bad:\n    notebook: nope.ipynb\n    method: main\n"


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_clean_repository_exits_zero(tmp_path: Path) -> None:
    proc = cli("validate", write_repo(tmp_path, {}))
    assert (proc.returncode, proc.stdout) == (
        0,
        "0 errors, 0 warnings; 1 task valid in 1 file (peach.conf/good.yaml)\n",
    )


def test_errors_print_path_line_message_and_exit_one(tmp_path: Path) -> None:
    proc = cli("validate", write_repo(tmp_path, {"peach.yaml": BROKEN}))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "peach.yaml:4: task 'bad': notebook: 'nope.ipynb' does not exist in the repository",
        "1 error, 0 warnings; 1 task valid in 2 files (peach.yaml, peach.conf/good.yaml)",
    ]


def test_default_repository_is_the_current_directory(tmp_path: Path) -> None:
    proc = cli("validate", cwd=write_repo(tmp_path, {"peach.yaml": BROKEN}))
    assert proc.returncode == 1


def test_codops_allow_list(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {})
    assert cli("validate", repo, "--codops", "chrts", "--codops", "sesr").returncode == 0
    proc = cli("validate", repo, "--codops", "sesr")
    assert proc.returncode == 1
    assert "may not schedule tasks for codops 'chrts' (allowed: sesr)" in proc.stdout


def test_json_output_is_machine_readable(tmp_path: Path) -> None:
    proc = cli("validate", write_repo(tmp_path, {"peach.yaml": BROKEN}), "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert data["ok"] is False
    assert [t["task"] for t in data["tasks"]] == ["good"]
    assert data["problems"] == [
        {
            "file": "peach.yaml",
            "line": 4,
            "cell": None,
            "task": "bad",
            "severity": "error",
            "message": "notebook: 'nope.ipynb' does not exist in the repository",
        }
    ]


def test_warnings_fail_only_with_strict(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, {"code/good.py": "%load_ext autoreload\ndef main():\n    pass\n"})
    # a .py file is plain Python: a magic there is a syntax error, not a warning
    assert cli("validate", repo).returncode == 1
    nb = '{"nbformat": 4, "cells": [{"cell_type": "code", "source": "%load_ext x\\ndef main():\\n  pass"}]}'
    repo = write_repo(
        tmp_path / "nb",
        {
            "peach.conf/good.yaml": "codops: chrts\ntasks:\n  good: {notebook: n.ipynb, method: main}\n",
            "n.ipynb": nb,
        },
    )
    assert cli("validate", repo).returncode == 0
    assert cli("validate", repo, "--strict").returncode == 1


def test_usage_errors_exit_two(tmp_path: Path) -> None:
    assert cli("validate", tmp_path / "missing").returncode == 2
    assert cli("validate", "--no-such-flag").returncode == 2
    assert cli().returncode == 2


@pytest.mark.timeout(300)  # word_count is a spark task: a JVM start, slow on a loaded machine
def test_demo_runs_the_service_on_a_sample_repository(tmp_path: Path) -> None:
    output = tmp_path / "demo.log"
    with output.open("wb") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli.main", "demo", "--workspace", str(tmp_path), "--port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "peach-scheduler is running: dashboard http://127.0.0.1:" in output.read_text(),
            60,
            "the service to listen",
        )
        config = tmp_path / "peach.yaml"
        config.write_text(
            f"workspace: {tmp_path}\norganisations:\n  default:\n    repositories:\n"
            f"      - url: {tmp_path / 'sample-repo'}\n"
        )
        store = Store.from_url(load_config(config).database_url)
        wait_for(
            lambda: (
                {r.task for r in store.list_runs(status=RunStatus.SUCCEEDED, limit=100)}
                >= {"hello", "word_count", "fetch_catalogue"}
            ),
            120,
            "every sample task to succeed",
        )
        store.close()
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    repo = tmp_path / "sample-repo"
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--oneline"], capture_output=True, text=True, check=True
    )
    assert log.stdout.count("\n") == 1
    assert cli("validate", repo, "--codops", "default", "--strict").returncode == 0


def test_a_port_in_use_is_one_line_naming_the_port_and_the_flag(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("demo", "--workspace", tmp_path, "--port", str(port))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if not line[:4].isdigit()]  # not log lines
    assert errors == [
        f"peach-scheduler demo: port {port} on 127.0.0.1 is already in use: stop what listens there, or "
        "choose another port with --port N (or http.port in the configuration)"
    ]
    assert "Traceback" not in done.stderr + done.stdout
