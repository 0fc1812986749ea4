"""The quick start's sample organisation repository, made from the tasks bundled with the scheduler."""

import shutil
import subprocess
from importlib import resources
from pathlib import Path


def create_sample(repo: Path) -> None:
    """A git repository with the bundled sample tasks, committed on ``master``."""
    sample = resources.files("scheduler") / "sample"
    with resources.as_file(sample) as source:
        shutil.copytree(source, repo)
    git = ["git", "-c", "user.name=peach", "-c", "user.email=peach@localhost", "-C", str(repo)]
    subprocess.run([*git, "init", "--quiet", "--initial-branch=master"], check=True)
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "--quiet", "--message", "Sample tasks"], check=True)
