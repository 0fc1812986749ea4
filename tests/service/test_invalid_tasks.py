"""A task whose definition became invalid stays listed as INVALID, with its problem and since which
commit, and never runs; a rejected head's problems name their real file and line (issue 19)."""

import json
import subprocess
import sys
from pathlib import Path

from scheduler.config import load_config
from scheduler.service.service import Service
from scheduler.status import RunStatus
from tests.helpers.orgs import QUICK, commit, git, org_repo, tasks_files, write_config

TF_YAML = (
    "codops: alpha\n"
    "tasks:\n"
    "  ok:\n"
    "    notebook: code/ok.py\n"
    "    method: train_modle\n"  # line 5: the typo
    "    executor: python\n"
    "  other:\n"
    "    notebook: code/other.py\n"
    "    method: main\n"
    "    executor: python\n"
)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_an_invalid_task_stays_listed_with_its_problem_and_does_not_run(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {}), "other": (QUICK, {})})
    config = write_config(tmp_path, {"alpha": repo})
    service = Service(load_config(config))
    try:
        assert {r.task for r in service.once()} == {"ok", "other"}
        git(repo, "rm", "-q", "peach.yaml")
        bad = commit(repo, {"peach.conf/tf.yaml": TF_YAML}, "move the tasks, with a typo")
        runs = service.once()
        assert [r.task for r in runs] == ["other"]
        states = {t.task: t for t in service.store.task_states("alpha")}
        invalid = states["ok"]
        assert invalid.state.value == "INVALID"
        assert invalid.reason == (
            "peach.conf/tf.yaml:5: method 'train_modle' is not defined at the top level of code/ok.py"
        )
        assert invalid.invalid_since == bad[:12]
        assert (invalid.file, invalid.line, invalid.last_status) == (
            "peach.conf/tf.yaml",
            3,
            RunStatus.SUCCEEDED,
        )
        assert not invalid.removed

        assert service.once() and {t.task: t.state.value for t in service.store.task_states("alpha")}[
            "ok"
        ] == ("INVALID")  # a later pass keeps it INVALID, since the commit it broke at
        assert service.store.task_states("alpha")[0].invalid_since == bad[:12]

        listed = json.loads(cli(config, "tasks", "--json").stdout)
        assert {t["task"]: (t["state"], t["invalid_since"]) for t in listed}["ok"] == ("INVALID", bad[:12])
        shown = cli(config, "problems", "--codops", "alpha")
        assert shown.returncode == 0, shown.stderr
        assert (
            "alpha: peach.conf/tf.yaml:5: task 'ok': method 'train_modle' is not defined at the top level "
            "of code/ok.py" in shown.stdout
        )
        problems = json.loads(cli(config, "problems", "--json").stdout)
        assert {(p["file"], p["line"], p["task"]) for p in problems} >= {("peach.conf/tf.yaml", 5, "ok")}

        commit(repo, {"peach.conf/tf.yaml": TF_YAML.replace("train_modle", "main")}, "fixed")
        assert {r.task for r in service.once()} == {"ok", "other"}
        fixed = {t.task: t for t in service.store.task_states("alpha")}["ok"]
        assert (fixed.state.value, fixed.reason, fixed.invalid_since) == ("FINISHED", None, None)
    finally:
        service.close()


def test_a_rejected_heads_problems_name_their_file_and_line(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {})})
    service = Service(load_config(write_config(tmp_path, {"alpha": repo})))
    try:
        good = service.once()[0].version
        files = tasks_files("alpha", {"ok": (QUICK, {})})
        files["peach.yaml"] = files["peach.yaml"].replace("method: main", "method: mian")
        head = commit(repo, files, "typo in the only task")
        runs = service.once()
        assert [(r.task, r.version) for r in runs] == [("ok", good)]  # the last good commit is served
        problems = service.store.problems("alpha")
        assert [(p.file, p.line, p.task) for p in problems] == [("peach.yaml", 5, "ok")]
        assert problems[0].message == (
            f"method 'mian' is not defined at the top level of code/ok.py (head {head[:12]}, not used; "
            f"serving {(good or '')[:12]})"
        )
        assert {t.task: t.state.value for t in service.store.task_states("alpha")} == {"ok": "FINISHED"}
    finally:
        service.close()
