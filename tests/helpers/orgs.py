"""Organisation repositories (real git) and operator configurations for service tests."""

import subprocess
import textwrap
from pathlib import Path

import yaml

from scheduler.runs import runlogs
from scheduler.store.records import Run

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=master"]

# The run object's fields every surface must give (SPEC §5).
SPEC_RUN_FIELDS = {
    "id",
    "codops",
    "task",
    "loop",
    "executor",
    "version",
    "status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "outcome",
    "application_id",
}

QUICK = "def main():\n    print('done')\n"
FAIL = "def main():\n    raise RuntimeError('boom')\n"
SLOW = "import time\n\ndef main(seconds=1000):\n    print('sleeping', flush=True)\n    time.sleep(seconds)\n"
FAMILY = textwrap.dedent(
    """\
    import subprocess, time

    def main():
        subprocess.Popen(["sleep", "1000"])
        subprocess.Popen(["setsid", "sleep", "1000"])
        print("started the family", flush=True)
        time.sleep(1000)
    """
)


def log_text(run: Run) -> str:
    """A run's log as text, plain (running) or compressed (finished)."""
    return runlogs.read(Path(run.log_path) if run.log_path else None)[0].decode(errors="replace")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def task_yaml(codops: str, tasks: dict[str, dict[str, object]]) -> str:
    body = {
        name: {"notebook": f"code/{name}.py", "method": "main", "executor": "python", **extra}
        for name, extra in tasks.items()
    }
    return yaml.safe_dump({"codops": codops, "tasks": body}, sort_keys=True)


def org_repo(root: Path, codops: str, tasks: dict[str, tuple[str, dict[str, object]]]) -> Path:
    """A git repository with one ``code/<task>.py`` per task; ``tasks``: name -> (code, extra YAML keys)."""
    repo = root / f"{codops}-repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    commit(repo, tasks_files(codops, tasks), "tasks")
    return repo


def tasks_files(codops: str, tasks: dict[str, tuple[str, dict[str, object]]]) -> dict[str, str]:
    files = {f"code/{name}.py": code for name, (code, _) in tasks.items()}
    files["peach.yaml"] = task_yaml(codops, {name: extra for name, (_, extra) in tasks.items()})
    return files


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for relative, text in files.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def write_config(tmp: Path, repos: dict[str, Path], state_url: str | None = None, **loops: object) -> Path:
    config: dict[str, object] = {
        "workspace": str(tmp / "workspace"),
        "http": {"host": "127.0.0.1", "port": 0, "api_token_env": "PEACH_TEST_TOKEN"},
        "loops": {"pause": "0.2s", **loops},
        "git": {"freshness": "0s"},  # every run at the head as of its start: tests commit, then expect it
        "organisations": {codops: {"repositories": [{"url": str(repo)}]} for codops, repo in repos.items()},
    }
    if state_url:
        config["state_url"] = state_url
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
