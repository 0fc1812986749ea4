"""What ran, rerun and diff, end to end: real git history, real uv environments from local wheels, real
child processes, the real HTTP server and CLI processes, SQLite and PostgreSQL."""

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from executors.base import RunRequest
from executors.environments import EnvironmentStore
from executors.spark import REDACTED, spark_settings, submit_command
from scheduler.config import OrganisationSettings, Resources, SparkSettings, load_config
from scheduler.errors import ManifestNotFound, RunNotFound
from scheduler.runs.manifests import capture
from scheduler.runs.rundiff import readable_runner
from scheduler.service.service import Service
from scheduler.spec.definitions import load_definitions
from scheduler.status import RunStatus
from scheduler.store.models import RunTrigger
from scheduler.store.records import Manifest, Run
from scheduler.store.store import Store
from tests.executors.test_spark_yarn import make_executor, started
from tests.executors.test_spark_yarn import request as yarn_request
from tests.helpers.executor_fixtures import make_wheel
from tests.helpers.fake_rm import FakeResourceManager
from tests.helpers.orgs import QUICK, commit, git, log_text, org_repo, tasks_files, write_config

TOKEN = "rerun-test-token"

CODE = (
    "import peachbase, peachpin\n\n"
    "def main(label):\n"
    "    # <b>not html</b>\n"
    "    versions = ('peachpin', peachpin.VERSION, 'peachbase', peachbase.VERSION)\n"
    "    print('code {which}', label, *versions, flush=True)\n"
)


def job(which: str, pin: str, label: str) -> tuple[str, dict[str, object]]:
    return CODE.format(which=which), {"dependencies": [pin], "args": {"label": label}}


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local package folder, the only index the environments see (uv reads UV_* settings)."""
    folder = tmp_path / "wheels"
    make_wheel(folder, "peachbase", "1.0", "VERSION = '1.0'\n")
    make_wheel(folder, "peachpin", "1.0", "VERSION = '1.0'\n", requires=["peachbase>=1.0"])
    monkeypatch.setenv("UV_FIND_LINKS", str(folder))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    return folder


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def http(service: Service, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{service.port}/api/v1/{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def only(runs: list[Run], trigger: RunTrigger, task: str = "job") -> Run:
    (found,) = [run for run in runs if run.trigger is trigger and run.task == task]
    return found


@pytest.fixture
def service(tmp_path: Path, state_url: str, wheels: Path) -> Iterator[Service]:
    repo = org_repo(tmp_path, "alpha", {"job": job("A", "peachpin==1.0", "first"), "other": (QUICK, {})})
    config = write_config(tmp_path, {"alpha": repo}, state_url=state_url)
    started = Service(load_config(config), environ={"PEACH_TEST_TOKEN": TOKEN})
    started.start_http()
    try:
        yield started
    finally:
        started.close()


def repo_of(service: Service) -> Path:
    return Path(service.config.organisations["alpha"].repositories[0].url)


def config_of(service: Service) -> Path:
    return service.config.workspace.parent / "config.yaml"


def test_rerun_runs_the_recorded_commit_with_its_pins_and_diff_shows_the_changes(
    service: Service, wheels: Path
) -> None:
    repo, config = repo_of(service), config_of(service)
    commit_a = git(repo, "rev-parse", "HEAD")
    run_a = only(service.once(), RunTrigger.SCHEDULE)
    assert run_a.status is RunStatus.SUCCEEDED, log_text(run_a)
    assert "code A first peachpin 1.0 peachbase 1.0" in log_text(run_a)

    manifest_a = service.store.get_manifest(run_a.id)
    assert manifest_a.commit == commit_a == run_a.version
    assert manifest_a.frozen == ("peachbase==1.0", "peachpin==1.0")  # the transitive one too
    assert manifest_a.requirements == ("peachpin==1.0",)
    assert manifest_a.args == {"label": "first"}
    assert manifest_a.spark is None  # a python task
    assert "print('code A'" in readable_runner(manifest_a.runner)
    assert manifest_a.runner == (service.config.workspace / "runs" / run_a.id / "runner.py").read_text()
    assert manifest_a.definition_file == "peach.yaml"
    assert "peachpin==1.0" in manifest_a.definition and "other:" not in manifest_a.definition

    # Commit B changes the code, the YAML (args) and a requirement; newer wheels are published.
    make_wheel(wheels, "peachbase", "1.1", "VERSION = '1.1'\n")
    make_wheel(wheels, "peachpin", "2.0", "VERSION = '2.0'\n", requires=["peachbase>=1.0"])
    files = tasks_files("alpha", {"job": job("B", "peachpin==2.0", "second"), "other": (QUICK, {})})
    commit_b = commit(repo, files, "B: new code, args and pin")
    run_b = only(service.once(), RunTrigger.SCHEDULE)
    assert run_b.version == commit_b and "code B second peachpin 2.0 peachbase 1.1" in log_text(run_b)

    # The environments of A are gone: the rerun must install A's exact set again (peachbase 1.1 exists now).
    service.runtime.executors["python"].environments.evict(max_age=0)  # type: ignore[attr-defined]
    assert http(service, "POST", f"runs/{run_a.id}/rerun")[0] == 401
    assert http(service, "POST", f"runs/{run_a.id}/rerun", token="wrong")[0] == 401
    status, request = http(service, "POST", f"runs/{run_a.id}/rerun", token=TOKEN)
    assert status == 202 and request["rerun_of"] == run_a.id and request["task"] == "job"

    runs = service.once()
    rerun = only(runs, RunTrigger.RERUN)
    assert only(runs, RunTrigger.SCHEDULE).version == commit_b  # the loop's own run stays at the head
    assert rerun.status is RunStatus.SUCCEEDED, log_text(rerun)
    assert (rerun.rerun_of, rerun.version) == (run_a.id, commit_a)
    assert "code A first peachpin 1.0 peachbase 1.0" in log_text(rerun)
    again = service.store.get_manifest(rerun.id)
    assert again.requirements == again.frozen == manifest_a.frozen
    assert again.args == manifest_a.args and again.definition == manifest_a.definition
    assert not list((service.config.workspace / "reruns").iterdir())  # the commit's tree was removed

    status, shown = http(service, "GET", f"runs/{rerun.id}")
    assert shown["rerun_of"] == run_a.id and shown["trigger"] == "rerun"
    assert shown["manifest"] == f"/api/v1/runs/{rerun.id}/manifest"
    status, manifest = http(service, "GET", f"runs/{run_a.id}/manifest")
    assert status == 200 and manifest["frozen"] == ["peachbase==1.0", "peachpin==1.0"]

    status, found = http(service, "GET", f"runs/{run_a.id}/diff/{run_b.id}")
    assert status == 200 and found["commit"] == {"a": commit_a, "b": commit_b, "changed": True}
    assert found["dependencies"]["changed"] == [
        {"name": "peachbase", "a": "==1.0", "b": "==1.1"},
        {"name": "peachpin", "a": "==1.0", "b": "==2.0"},
    ]
    assert found["args"] == {"label": {"a": "first", "b": "second"}}
    assert "-    print('code A', label" in found["code"] and "+    print('code B', label" in found["code"]
    same = http(service, "GET", f"runs/{run_a.id}/diff/{rerun.id}")[1]
    assert same["same"] and same["code"] == "" and same["dependencies"]["diff"] == ""
    if service.store.engine.dialect.name != "sqlite":
        return  # the CLI processes read the store the same way: once (on SQLite) is enough

    # The CLI: separate processes reading the same store.
    text = cli("diff", run_a.id, run_b.id, "--config", config)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert f"commit: {commit_a} -> {commit_b}" in out
    assert "-    print('code A', label" in out and "+    print('code B', label" in out
    assert "-    - peachpin==1.0" in out and "+    - peachpin==2.0" in out  # the YAML
    assert "-      label: first" in out and "+      label: second" in out
    assert "changed  peachpin: ==1.0 -> ==2.0" in out and "changed  peachbase: ==1.0 -> ==1.1" in out
    assert json.loads(cli("diff", run_a.id, run_b.id, "--config", config, "--json").stdout) == found

    shown_text = cli("runs", "show", rerun.id, "--config", config)
    assert shown_text.returncode == 0, shown_text.stderr
    assert re.search(rf"^rerun_of: +{run_a.id}$", shown_text.stdout, re.MULTILINE)  # aligned fields
    assert f"commit:       {commit_a}" in shown_text.stdout and "  peachbase==1.0" in shown_text.stdout
    # the task's code as code, not the runner's escaped JSON line nor the progress helper's source
    assert "CHUNKS = ...  # the code above" in shown_text.stdout
    assert "PROGRESS_HELPER = ...  # the source of executors/peach_progress.py" in shown_text.stdout
    assert "def report(" not in shown_text.stdout
    assert "      print('code A', label" in shown_text.stdout


@pytest.mark.parametrize("state_url", ["sqlite"], indirect=True)  # the store's part runs on both below
def test_bad_rerun_and_diff_requests_get_clear_errors(service: Service) -> None:
    repo, config = repo_of(service), config_of(service)
    runs = service.once()
    job_run, other_run = only(runs, RunTrigger.SCHEDULE), only(runs, RunTrigger.SCHEDULE, "other")

    status, body = http(service, "GET", f"runs/{job_run.id}/diff/{other_run.id}")
    assert status == 409 and "diff compares two runs of one task" in body["detail"]
    refused = cli("diff", job_run.id, other_run.id, "--config", config)
    assert refused.returncode == 1 and "diff compares two runs of one task" in refused.stderr
    assert http(service, "GET", f"runs/r-nope/diff/{job_run.id}") == (404, {"detail": "no run 'r-nope'"})
    assert http(service, "POST", "runs/r-nope/rerun", token=TOKEN) == (404, {"detail": "no run 'r-nope'"})
    unknown = cli("rerun", "r-nope", "--config", config)
    assert unknown.returncode == 1 and "no run 'r-nope'" in unknown.stderr

    # A run recorded without a manifest (as before this feature).
    bare = service.store.start_run("alpha", "job", loop="alpha", executor="python", version=job_run.version)
    service.store.finish_run(bare.id, RunStatus.SUCCEEDED, "exit code 0")
    status, body = http(service, "POST", f"runs/{bare.id}/rerun", token=TOKEN)
    assert status == 404 and "has no manifest" in body["detail"]
    assert "none (the run predates manifests)" in cli("runs", "show", bare.id, "--config", config).stdout
    shown = json.loads(cli("runs", "show", job_run.id, "--config", config, "--json").stdout)
    assert shown["id"] == job_run.id and shown["manifest"]["commit"] == job_run.version
    assert shown["manifest"]["frozen"] == ["peachbase==1.0", "peachpin==1.0"]

    # History rewritten and garbage-collected: the run's commit is gone from the checkout.
    git(repo, "commit", "-q", "--amend", "-m", "rewritten")
    rewritten = only(service.once(), RunTrigger.SCHEDULE)
    assert rewritten.version != job_run.version
    checkout = service.checkouts("alpha")[0]
    git(checkout, "reflog", "expire", "--expire=now", "--all")
    git(checkout, "gc", "-q", "--prune=now")
    assert subprocess.run(["git", "-C", str(checkout), "cat-file", "-e", job_run.version or ""]).returncode
    status, body = http(service, "POST", f"runs/{job_run.id}/rerun", token=TOKEN)
    assert (
        status == 409
        and f"commit {(job_run.version or '')[:12]} is no longer in the repositories" in body["detail"]
    )
    gone = cli("rerun", job_run.id, "--config", config)
    assert gone.returncode == 1 and "is no longer in the repositories of alpha" in gone.stderr
    # A request accepted before the commit went away fails when the loop takes it, as a recorded run.
    service.store.request_rerun(job_run.id, requested_by="test")
    failed = only(service.once(), RunTrigger.RERUN)
    assert failed.status is RunStatus.FAILED and failed.rerun_of == job_run.id
    assert "not started: commit" in (failed.outcome or "") and "no longer in the repositories" in (
        failed.outcome or ""
    )

    # A task that its recorded commit does not define (the manifest says commit X, X has no such task).
    ghost = service.store.start_run(
        "alpha", "ghost", loop="alpha", executor="python", version=rewritten.version
    )
    service.store.finish_run(ghost.id, RunStatus.SUCCEEDED, "exit code 0")
    manifest = service.store.get_manifest(rewritten.id)
    service.store.save_manifest(replace(manifest, run_id=ghost.id))
    cli_request = cli("rerun", ghost.id, "--config", config)
    assert cli_request.returncode == 0 and "will run again at commit" in cli_request.stdout
    missing = only(service.once(), RunTrigger.RERUN, "ghost")
    assert missing.status is RunStatus.FAILED
    assert f"task alpha/ghost is not defined at commit {(rewritten.version or '')[:12]}" in (
        missing.outcome or ""
    )


def test_rerun_needs_a_configured_token(tmp_path: Path) -> None:
    repo = org_repo(tmp_path, "alpha", {"ok": (QUICK, {})})
    service = Service(load_config(write_config(tmp_path, {"alpha": repo})), environ={})
    service.start_http()
    try:
        (run,) = service.once()
        status, body = http(service, "POST", f"runs/{run.id}/rerun", token="anything")
        assert status == 403 and "no API token is set" in body["detail"]
        assert service.store.take_triggers("alpha") == []
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/api/v1/openapi.json") as response:
            paths = json.loads(response.read())["paths"]
        assert "post" in paths["/api/v1/runs/{run_id}/rerun"]
        assert "frozen" in paths["/api/v1/runs/{run_id}/manifest"]["get"]["description"]
        assert "/api/v1/runs/{run_id}/diff/{other_id}" in paths
    finally:
        service.close()


def test_store_keeps_manifests_and_rerun_requests(state_url: str, tmp_path: Path) -> None:
    store = Store.from_url(state_url)
    try:
        run = store.start_run("alpha", "job", loop="alpha", executor="spark", version="c0ffee" * 6 + "abcd")
        with pytest.raises(ManifestNotFound, match=f"run {run.id} of alpha/job has no manifest"):
            store.get_manifest(run.id)
        with pytest.raises(RunNotFound):
            store.get_manifest("r-nope")
        manifest = Manifest(
            run_id=run.id,
            recorded_at=run.started_at,
            commit=run.version,
            runner="print('hi')\n",
            requirements=("pandas==2.2.3",),
            frozen=("numpy==2.1.0", "pandas==2.2.3"),
            spark={"queue": "alpha", "conf": {"spark.x": "1"}},
            args={"n": 3, "names": ["a", "é"]},
            definition_file="peach.conf/a.yaml",
            definition="codops: alpha\n",
        )
        assert not store.has_manifest(run.id)
        store.save_manifest(manifest)
        assert store.get_manifest(run.id) == manifest and store.has_manifest(run.id)
        with pytest.raises(RunNotFound):
            store.save_manifest(replace(manifest, run_id="r-nope"))

        first = store.request_rerun(run.id, requested_by="api")
        assert store.request_rerun(run.id, requested_by="cli") == first  # one waiting request per run
        trigger = store.request_trigger("alpha", "job", requested_by="api")  # not swallowed by the rerun
        assert trigger.id != first.id and trigger.rerun_of is None
        taken = store.take_triggers("alpha")
        assert [(t.id, t.rerun_of) for t in taken] == [(first.id, run.id), (trigger.id, None)]

        store.finish_run(run.id, RunStatus.SUCCEEDED, "exit code 0")
        rerun = store.start_run(
            "alpha",
            "job",
            loop="alpha",
            executor="spark",
            version=run.version,
            trigger=RunTrigger.RERUN,
            rerun_of=run.id,
        )
        assert store.get_run(rerun.id).as_dict()["rerun_of"] == run.id
        store.finish_run(rerun.id, RunStatus.SUCCEEDED, "exit code 0")
        assert store.prune_runs(older_than=timedelta(seconds=-60)) == 2
        with pytest.raises(RunNotFound):
            store.get_manifest(run.id)
    finally:
        store.close()


def test_spark_settings_are_parsed_back_with_secrets_redacted(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "code").mkdir(parents=True)
    (root / "code" / "job.py").write_text("def main(spark):\n    pass\n")
    (root / "peach.yaml").write_text(
        "codops: alpha\ntasks:\n  job:\n    notebook: code/job.py\n    method: main\n"
        "    spark: {spark.sql.shuffle.partitions: 8}\n"
    )
    (task,) = load_definitions(root).tasks
    settings = SparkSettings(
        master="yarn",
        deploy_mode="cluster",
        conf={
            "spark.ssl.keyPassword": "hunter2",
            "spark.hadoop.fs.s3a.secret.key": "abc",
            "spark.hadoop.fs.s3a.access.key": "AKIA",
            "spark.eventLog.dir": "https://bob:pw@logs.example.org/spark",
            "spark.dynamicAllocation.enabled": True,
        },
        allowed_overrides=("spark.sql.shuffle.*",),
    )
    organisation = OrganisationSettings(
        queue="alpha-q", resources=Resources(executors=3, executor_memory="4g")
    )
    request = RunRequest("r-20260101-000000-abcdef", task, 60, "c" * 40)
    command = submit_command(
        settings, organisation, request, tmp_path / "runner.py", archive=tmp_path / "e.tar.gz"
    )
    found = spark_settings(command)
    assert (found["master"], found["deploy_mode"], found["queue"]) == ("yarn", "cluster", "alpha-q")
    assert (found["num_executors"], found["executor_memory"], found["driver_memory"]) == ("3", "4g", "1g")
    conf = found["conf"]
    assert conf["spark.sql.shuffle.partitions"] == "8" and conf["spark.dynamicAllocation.enabled"] == "true"
    assert conf["spark.ssl.keyPassword"] == conf["spark.hadoop.fs.s3a.secret.key"] == REDACTED
    assert conf["spark.hadoop.fs.s3a.access.key"] == REDACTED
    assert conf["spark.eventLog.dir"] == f"https://bob:{REDACTED}@logs.example.org/spark"
    assert "hunter2" not in json.dumps(found) and "AKIA" not in json.dumps(found)
    assert "peach-run-r-20260101-000000-abcdef" in conf["spark.yarn.tags"]
    assert str(tmp_path / "runner.py") not in json.dumps(found)  # the script is kept as text, not a path


def test_yarn_run_manifest_records_the_effective_submission(tmp_path: Path) -> None:
    """A spark run on YARN (the stand-in spark-submit and the fake ResourceManager of the YARN tests)."""
    rm = FakeResourceManager()
    try:
        conf = {"spark.ssl.keyPassword": "hunter2", "spark.dynamicAllocation.enabled": False}
        executor = make_executor(EnvironmentStore(tmp_path / "envs"), tmp_path, rm, conf=conf)
        req = yarn_request(tmp_path)
        execution = started(executor, req)
        manifest = capture(req.task, req.run_id, "abc1234", execution)
        execution.kill("the test has what it needs")  # ends the run whatever stage it reached
    finally:
        rm.close()
    assert manifest.runner == (executor.runs_root / req.run_id / "runner.py").read_text()
    assert manifest.frozen == ()  # the task has no requirements: an empty environment
    spark = manifest.spark or {}
    assert (spark["master"], spark["queue"], spark["num_executors"], spark["executor_memory"]) == (
        "yarn",
        "root.chrts",
        "3",
        "4g",
    )
    assert spark["archives"].endswith(".tar.gz#environment")
    assert spark["conf"]["spark.ssl.keyPassword"] == REDACTED
    assert spark["conf"]["spark.dynamicAllocation.enabled"] == "false"
    assert spark["conf"]["spark.yarn.maxAppAttempts"] == "1"
    assert "hunter2" not in json.dumps(manifest.as_dict())
