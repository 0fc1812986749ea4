"""A run's directory on this host, prepared the same way by every executor whose run starts here.

Each run gets ``<runs_root>/<run id>/``::

    runner.py     the generated runner script (executors.runner)
    output.log    the run's log (executors.logs): timestamped, capped, kept after the run
    work/         the working directory, HOME and (work/tmp) TMPDIR; removed after the run unless kept
    artifacts/    files kept with the run (``PEACH_ARTIFACTS_DIR``; ``<artifacts_root>/<run id>`` if set)

The child's environment is built from an allow-list (``pass_env``, ``LC_*``) plus what the run needs
(``PEACH_RUN_ID``, ``PEACH_CODOPS``, ``PEACH_TASK``, ``PEACH_VERSION``, ``VIRTUAL_ENV``), and its
organisation's ``env`` and secrets (``executors.taskenv``; secrets only when ``secrets_in_env``); nothing
else of the scheduler's environment (tokens, database URLs, settings) reaches task code.

``LocalRuns.prepare`` builds all that around an environment the executor chooses; the executor then
builds its command line inside ``Prepared.building()`` (which releases the environment if that fails)
and makes its execution with ``Prepared.cleanup``.
"""

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executors.base import ExecutionManifest, RunRequest
from executors.environments import Environment
from executors.runner import runner_script
from executors.taskenv import TaskEnv, resolve
from scheduler.config import OrganisationSettings
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


@dataclass
class Prepared:
    """A run's directory, environment (leased) and child environment, ready for its command line."""

    request: RunRequest
    run_dir: Path
    log_path: Path
    workdir: Path
    runner: Path
    env: Environment
    environ: dict[str, str]
    artifacts: Path | None
    keep_workdir: bool = False
    taskenv: TaskEnv = field(default_factory=TaskEnv)
    private_files: list[Path] = field(default_factory=list)  # removed when the run is over, kept or not

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """Around the executor's own steps: on any failure the environment is released (an ``OSError``
        becomes ``ExecutionError``)."""
        try:
            yield
        except OSError as exc:
            self.env.release()
            raise ExecutionError(f"run {self.request.run_id}: cannot prepare {self.run_dir}: {exc}") from exc
        except BaseException:
            self.env.release()
            raise

    def cleanup(self) -> None:
        """When the run is over: release the environment, remove the work directory unless kept."""
        self.env.release()
        for path in self.private_files:
            path.unlink(missing_ok=True)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def manifest(self, spark: dict[str, Any] | None = None) -> ExecutionManifest:
        return ExecutionManifest(runner=self.runner, python=self.env.python, spark=spark)


class LocalRuns:
    """Prepares run directories under ``runs_root``. ``source_env`` defaults to the scheduler's
    ``os.environ``; ``artifacts_root`` moves artifacts out of the run directory."""

    def __init__(
        self,
        runs_root: Path,
        *,
        pass_env: tuple[str, ...] = DEFAULT_PASS_ENV,
        keep_workdir: bool = False,
        artifacts_root: Path | None = None,
        source_env: Mapping[str, str] | None = None,
        organisations: Mapping[str, OrganisationSettings] | None = None,
    ) -> None:
        self.root, self.pass_env, self.keep_workdir = Path(runs_root), pass_env, keep_workdir
        self.artifacts_root, self._source_env = artifacts_root, source_env
        self.organisations = organisations if organisations is not None else {}

    @property
    def source_env(self) -> Mapping[str, str]:
        """The scheduler's environment: what is passed on, and where ``{env: VAR}`` secrets are read."""
        return os.environ if self._source_env is None else self._source_env

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "output.log"

    def prepare(
        self,
        request: RunRequest,
        environment: Callable[[], Environment],
        *,
        artifacts: bool = True,
        secrets_in_env: bool = True,
    ) -> Prepared:
        """The run's directory, its environment (``environment()``: built or found, leased), runner and
        child environment; ``artifacts`` False: the run's files cannot be collected here;
        ``secrets_in_env`` False: the executor delivers the secrets (``Prepared.taskenv``) another way.
        A secret that cannot be read raises ``ExecutionError`` before anything is made."""
        task = request.task
        taskenv = resolve(self.organisations.get(task.codops), task, request.run_id, self.source_env)
        run_dir = self._make_dir(request)
        log_path = self.log_path(request.run_id)
        try:
            env = environment()
        except EnvironmentBuildError as exc:
            log_path.write_text(f"[peach] run {request.run_id}: {exc}\n\n{exc.details}")
            exc.log_path = log_path
            log.warning("run %s: task %s: no environment: %s", request.run_id, request.task.key, exc)
            raise
        workdir = run_dir / "work"
        prepared = Prepared(request, run_dir, log_path, workdir, run_dir / "runner.py", env, {}, None)
        prepared.keep_workdir, prepared.taskenv = self.keep_workdir, taskenv
        with prepared.building():
            (workdir / "tmp").mkdir(parents=True)
            prepared.runner.write_text(runner_script(request.task))
            prepared.environ = task_environment(request, workdir, env, self.source_env, self.pass_env)
            prepared.environ.update(taskenv.env)
            if secrets_in_env:
                prepared.environ.update(taskenv.secrets)
            if artifacts:
                prepared.artifacts = self._artifacts_dir(request, run_dir)
                prepared.artifacts.mkdir(parents=True)
                prepared.environ[ARTIFACTS_ENV] = str(prepared.artifacts)
        return prepared

    def _make_dir(self, request: RunRequest) -> Path:
        if not RUN_ID.fullmatch(request.run_id):
            raise ExecutionError(f"run id {request.run_id!r} is not usable as a directory name")
        run_dir = self.run_dir(request.run_id)
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            raise ExecutionError(f"run {request.run_id}: its directory {run_dir} already exists") from None
        except OSError as exc:
            raise ExecutionError(f"run {request.run_id}: cannot create {run_dir}: {exc}") from exc
        return run_dir

    def _artifacts_dir(self, request: RunRequest, run_dir: Path) -> Path:
        if self.artifacts_root is not None:
            return self.artifacts_root / request.run_id
        return run_dir / "artifacts"
