"""The python executor: the task's runner script, run by its environment's interpreter on this host.

The run's directory and child environment are the ones every local run gets (``executors.rundir``); the
child is a ``LocalProcess`` (``executors.process``: own session, group kill, run marker sweep). After a
restart, a survivor of a previous scheduler is found by its marker, killed, and its run closed LOST.
"""

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from executors.base import Executor, Recovery, RunningRun, RunRequest
from executors.cgroups import MemoryCgroups
from executors.environments import EnvironmentStore
from executors.logs import LogLimits
from executors.process import PROC, Launcher, Popen, ProcessExecution
from executors.rundir import ARTIFACTS_ENV, DEFAULT_PASS_ENV, LocalRuns, task_environment
from scheduler.config import OrganisationSettings
from scheduler.spec.definitions import Task
from scheduler.spec.taskspec import ExecutorKind

__all__ = ["ARTIFACTS_ENV", "DEFAULT_PASS_ENV", "PythonExecutor", "task_environment"]


class PythonExecutor(Executor):
    """Runs tasks as local child processes. ``source_env`` defaults to the scheduler's ``os.environ``;
    ``organisations`` gives each codops' ``env`` and secrets (``executors.taskenv``)."""

    kind = ExecutorKind.PYTHON

    def __init__(
        self,
        environments: EnvironmentStore,
        runs_root: Path,
        *,
        grace: float = 10.0,
        limits: LogLimits | None = None,
        pass_env: tuple[str, ...] = DEFAULT_PASS_ENV,
        keep_workdir: bool = False,
        artifacts_root: Path | None = None,
        source_env: Mapping[str, str] | None = None,
        organisations: Mapping[str, OrganisationSettings] | None = None,
        proc_root: Path = PROC,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        popen: Popen = subprocess.Popen,
        cgroups: MemoryCgroups | None = None,
    ) -> None:
        self.environments = environments
        self.runs = LocalRuns(
            runs_root,
            pass_env=pass_env,
            keep_workdir=keep_workdir,
            artifacts_root=artifacts_root,
            source_env=source_env,
            organisations=organisations,
        )
        self.launcher = Launcher(limits or LogLimits(), grace, proc_root, clock, wall, popen, cgroups)

    @property
    def runs_root(self) -> Path:
        return self.runs.root

    def run_dir(self, run_id: str) -> Path:
        return self.runs.run_dir(run_id)

    def prepare(self, request: RunRequest) -> ProcessExecution:
        prepared = self.runs.prepare(request, lambda: self.environments.ensure(request.task.requirements))
        with prepared.building():
            command = [str(prepared.env.python), str(prepared.runner)]
        process = self.launcher.process(
            request,
            command,
            prepared.environ,
            prepared.workdir,
            prepared.log_path,
            masker=prepared.taskenv.masker(),
        )
        execution = ProcessExecution(process, cleanup=prepared.cleanup, manifest=prepared.manifest())
        execution.artifacts_dir = prepared.artifacts
        return execution

    def waiting(self, task: Task) -> str | None:
        return self.environments.backing_off(task.requirements)

    def recover(self, running: Sequence[RunningRun]) -> Recovery:
        return self.launcher.recover(running)
