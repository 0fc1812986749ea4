"""``peach-scheduler validate`` and ``demo`` as task authors and operators call them: a real process."""

import json
import subprocess
import sys
from pathlib import Path

from tests.repos import write_repo

BROKEN = "codops: chrts\ntasks:\n  bad:\n    notebook: nope.ipynb\n    method: main\n"


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *map(str, args)],
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


def test_help_everywhere() -> None:
    for args in ([], ["validate"], ["demo"]):
        proc = cli(*args, "--help")
        assert proc.returncode == 0 and "usage: peach-scheduler" in proc.stdout


def test_demo_creates_a_git_repository_of_valid_sample_tasks(tmp_path: Path) -> None:
    proc = cli("demo", "--workspace", tmp_path)
    repo = tmp_path / "sample-repo"

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 tasks valid in 2 files" in proc.stdout
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--oneline"], capture_output=True, text=True, check=True
    )
    assert log.stdout.count("\n") == 1
    assert cli("validate", repo, "--codops", "default", "--strict").returncode == 0
