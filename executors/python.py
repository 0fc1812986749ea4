"""The python executor: the task's runner script, run by its environment's interpreter on this host.

Each run gets ``<runs_root>/<run id>/``::

    runner.py     the generated runner script (executors.runner)
    output.log    the run's log (executors.logs): timestamped, capped, kept after the run
    work/         the working directory, HOME and (work/tmp) TMPDIR; removed after the run unless kept
    artifacts/    files kept with the run (``PEACH_ARTIFACTS_DIR``; ``<artifacts_root>/<run id>`` if set)

The child's environment is built from an allow-list (``pass_env``, ``LC_*``) plus what the run needs
(``PEACH_RUN_ID``, ``PEACH_CODOPS``, ``PEACH_TASK``, ``PEACH_VERSION``, ``VIRTUAL_ENV``); nothing else of
the scheduler's environment (tokens, database URLs, settings) reaches task code.
"""

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from executors.base import Executor, RunRequest
from executors.environments import Environment, EnvironmentStore
from executors.logs import LogLimits
from executors.process import PROC, Popen, ProcessExecution
from executors.runner import runner_script
from scheduler.errors import EnvironmentBuildError, ExecutionError

log = logging.getLogger(__name__)

ARTIFACTS_ENV = "PEACH_ARTIFACTS_DIR"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_PASS_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


def task_environment(
    request: RunRequest,
    workdir: Path,
    env: Environment,
    source: Mapping[str, str],
    pass_env: tuple[str, ...] = DEFAULT_PASS_ENV,
) -> dict[str, str]:
    """The whole environment of a task's process: the allow-listed variables and the run's own."""
    passed = {k: v for k, v in source.items() if k in pass_env or k.startswith("LC_")}
    task = request.task
    return {
        **passed,
        "PATH": os.pathsep.join([str(env.path / "bin"), passed.get("PATH", os.defpath)]),
        "VIRTUAL_ENV": str(env.path),
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "PYTHONUNBUFFERED": "1",
        "PEACH_RUN_ID": request.run_id,
        "PEACH_CODOPS": task.codops,
        "PEACH_TASK": task.name,
        "PEACH_VERSION": request.version,
        **request.extra_env,
    }


class PythonExecutor(Executor):
    """Runs tasks as local child processes. ``source_env`` defaults to the scheduler's ``os.environ``."""

    name = "python"

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
        proc_root: Path = PROC,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        popen: Popen = subprocess.Popen,
    ) -> None:
        self.environments, self.runs_root = environments, Path(runs_root)
        self.artifacts_root = artifacts_root
        self.grace, self.limits, self.pass_env = grace, limits or LogLimits(), pass_env
        self.keep_workdir = keep_workdir
        self._source_env = source_env
        self._proc_root, self._clock, self._wall, self._popen = proc_root, clock, wall, popen

    def run_dir(self, run_id: str) -> Path:
        return self.runs_root / run_id

    def prepare(self, request: RunRequest) -> ProcessExecution:
        if not RUN_ID.fullmatch(request.run_id):
            raise ExecutionError(f"run id {request.run_id!r} is not usable as a directory name")
        self._check(request)
        run_dir = self.run_dir(request.run_id)
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            raise ExecutionError(f"run {request.run_id}: its directory {run_dir} already exists") from None
        except OSError as exc:
            raise ExecutionError(f"run {request.run_id}: cannot create {run_dir}: {exc}") from exc
        log_path = run_dir / "output.log"
        try:
            env = self._environment(request)
        except EnvironmentBuildError as exc:
            log_path.write_text(f"[peach] run {request.run_id}: {exc}\n\n{exc.details}")
            exc.log_path = log_path
            log.warning("run %s: task %s: no environment: %s", request.run_id, request.task.key, exc)
            raise
        try:
            workdir = run_dir / "work"
            (workdir / "tmp").mkdir(parents=True)
            runner = run_dir / "runner.py"
            runner.write_text(runner_script(request.task))
            source = os.environ if self._source_env is None else self._source_env
            environ = task_environment(request, workdir, env, source, self.pass_env)
            artifacts = self._artifacts_dir(request, run_dir)
            if artifacts is not None:
                artifacts.mkdir(parents=True)
                environ[ARTIFACTS_ENV] = str(artifacts)
            command = self._command(request, run_dir, runner, env, environ)
        except OSError as exc:
            env.release()
            raise ExecutionError(f"run {request.run_id}: cannot prepare {run_dir}: {exc}") from exc
        except BaseException:
            env.release()
            raise

        def cleanup() -> None:
            env.release()
            if not self.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

        execution = self._execution(request, command, environ, workdir, log_path, cleanup)
        execution.artifacts_dir = artifacts
        if artifacts is None:
            execution.artifacts_note = self._no_artifacts
        return execution

    # -- the steps another local-process executor (spark-submit) changes -----------------------------

    _no_artifacts = "artifacts: none for this run"

    def _artifacts_dir(self, request: RunRequest, run_dir: Path) -> Path | None:
        """Where the task writes files to keep with the run; None when they cannot be collected here."""
        if self.artifacts_root is not None:
            return self.artifacts_root / request.run_id
        return run_dir / "artifacts"

    def _check(self, request: RunRequest) -> None:
        """Refuse a run before anything is built for it."""

    def _environment(self, request: RunRequest) -> Environment:
        return self.environments.ensure(request.task.requirements)

    def _command(
        self, request: RunRequest, run_dir: Path, runner: Path, env: Environment, environ: dict[str, str]
    ) -> list[str]:
        """The command line; it may add to ``environ``."""
        return [str(env.python), str(runner)]

    def _execution(
        self,
        request: RunRequest,
        command: list[str],
        environ: dict[str, str],
        workdir: Path,
        log_path: Path,
        cleanup: Callable[[], None],
    ) -> ProcessExecution:
        return ProcessExecution(
            request, command, environ, workdir, log_path, **self._process_options(cleanup)
        )

    def _process_options(self, cleanup: Callable[[], None]) -> dict[str, Any]:
        return {
            "limits": self.limits,
            "grace": self.grace,
            "proc_root": self._proc_root,
            "clock": self._clock,
            "wall": self._wall,
            "popen": self._popen,
            "cleanup": cleanup,
        }
