"""The spark executor: the task's runner script, submitted with ``spark-submit`` (never through a shell).

Masters:

- ``local[*]`` (the embedded default) and ``spark://`` standalone (client mode): the driver runs here, under
  the python executor's process rules (own session, group kill, run marker sweep). The driver's Python is
  the task environment's interpreter (``PYSPARK_PYTHON``/``PYSPARK_DRIVER_PYTHON``). pyspark itself is not
  installed into task environments: the run's ``pyspark/`` directory holds two symlinks, to the
  scheduler's own ``pyspark`` and ``py4j`` packages, and goes on ``PYTHONPATH`` (driver, and executors
  through ``spark.executorEnv.PYTHONPATH``). So the Python side always matches the JVM side that
  ``spark-submit`` starts, and nothing else of the scheduler's packages leaks into task code.
- ``yarn``: cluster mode. The environment is packed (``EnvironmentStore.archive``, built for the cluster's
  interpreter ``spark.python``) and shipped with ``--archives <tar.gz>#environment``; the driver and
  executors run ``./environment/bin/python``. ``spark.yarn.submit.waitAppCompletion=false`` makes
  spark-submit return once YARN accepted the application; from then on the run is followed, killed and
  its logs fetched through the ResourceManager (``executors.yarn.execution``).

Every submission carries lowercase YARN tags ``peach``, ``peach-codops-<codops>``, ``peach-task-<task>``,
``peach-run-<run id>`` (YARN allows 10 tags of 100 characters), so a run's application is found again
by its tag. Task-level ``spark`` settings are passed only where the operator's ``spark.allowed_overrides``
(glob patterns) permit.

The executor is composed, not derived: the run directory is ``executors.rundir``'s, the local child
(the driver, or the YARN client) an ``executors.process.LocalProcess``; on YARN the run is an
``executors.yarn.execution.YarnExecution``. After a restart, runs on YARN are re-attached or their
applications killed (``executors.yarn.recovery``); the rest are closed as any local run.
"""

import fnmatch
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from executors.base import Execution, Executor, Recovery, RunningRun, RunRequest
from executors.cgroups import MemoryCgroups
from executors.environments import Environment, EnvironmentStore
from executors.logs import LogLimits
from executors.process import PROC, Launcher, Popen, ProcessExecution
from executors.rundir import DEFAULT_PASS_ENV, LocalRuns, Prepared
from executors.taskenv import organisation_masker
from executors.yarn.client import ResourceManager
from executors.yarn.execution import MAX_TAG_LENGTH, YarnExecution, YarnOptions, run_tag
from executors.yarn.kerberos import TicketCache
from executors.yarn.recovery import recover_applications
from executors.yarn.tracker import ApplicationTracker
from scheduler.capacity import Demand
from scheduler.config import KerberosSettings, OrganisationSettings, Resources, SparkSettings
from scheduler.errors import ExecutionError
from scheduler.spec.definitions import Task
from scheduler.spec.taskspec import ExecutorKind

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
# Setting names whose values are secrets (spark.ssl.keyPassword, fs.s3a.secret.key, ...).
SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|credential|(^|[._-])(access[._-]?)?key($|[._-])", re.I)
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/:@\s]*):[^/@\s]*@", re.I)

SPARK_PASS_ENV: tuple[str, ...] = (*DEFAULT_PASS_ENV, "JAVA_HOME", "SPARK_HOME", "SPARK_CONF_DIR")
SPARK_PASS_ENV += ("HADOOP_CONF_DIR", "YARN_CONF_DIR", "HADOOP_USER_NAME")
YARN_PYTHON = "./environment/bin/python"
SECRETS_FILE = "peach-secrets.json"  # the name of the run's secrets in the driver's container on YARN
SECRETS_ENV = "PEACH_SECRETS_FILE"  # tells the runner to read it (executors.runner)
MAX_TAGS = 10


def spark_home() -> Path | None:
    """The directory of the installed ``pyspark`` package (a Spark home with ``bin/spark-submit``)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_submit(submit: str) -> str:
    """``submit`` as configured; the bare default ``spark-submit`` not on PATH means pyspark's own."""
    if "/" in submit or shutil.which(submit):
        return submit
    home = spark_home()
    return str(home / "bin" / "spark-submit") if home is not None else submit


def run_tags(request: RunRequest) -> list[str]:
    """The YARN application tags of a run: lowercase, no commas, at most 10 of at most 100 characters."""
    task = request.task
    tags = ["peach", f"peach-codops-{task.codops}", f"peach-task-{task.name}", run_tag(request.run_id)]
    return [tag.lower().replace(",", "_")[:MAX_TAG_LENGTH] for tag in tags][:MAX_TAGS]


def task_overrides(request: RunRequest, allowed: tuple[str, ...]) -> dict[str, str]:
    """The task's own ``spark`` settings; one the operator does not allow fails the run before it starts."""
    refused = [key for key in request.task.definition.spark if not _allowed(key, allowed)]
    if refused:
        raise ExecutionError(
            f"run {request.run_id}: task {request.task.key} sets {', '.join(sorted(refused))}, which the "
            "operator does not allow tasks to override (spark.allowed_overrides)"
        )
    return {key: _conf_value(value) for key, value in request.task.definition.spark.items()}


def _allowed(key: str, allowed: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in allowed)


def _conf_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def submit_command(
    settings: SparkSettings,
    organisation: OrganisationSettings,
    request: RunRequest,
    runner: Path,
    *,
    archive: Path | None = None,
    python_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    secrets_file: Path | None = None,
    kerberos: KerberosSettings | None = None,
) -> list[str]:
    """The spark-submit argument list for one run. ``env`` (the organisation's plain settings) goes to the
    YARN application master's and executors' environment (a local driver has it in its own);
    ``secrets_file`` is shipped privately with ``--files`` (never a secret value in a ``--conf``)."""
    task, resources = request.task, organisation.resources
    yarn = settings.master == "yarn"
    command = [resolve_submit(settings.submit), "--master", settings.master]
    command += ["--deploy-mode", settings.deploy_mode, "--name", f"peach-{task.codops}-{task.name}"]
    if yarn and organisation.hadoop_user:  # the application runs as the organisation's user
        command += ["--proxy-user", organisation.hadoop_user]
    elif yarn and kerberos is not None:  # Spark refuses both: a proxy user goes with our own ticket
        command += ["--principal", kerberos.principal, "--keytab", str(kerberos.keytab)]
    if yarn:
        command += ["--queue", organisation.queue, "--num-executors", str(resources.executors)]
    command += _resources(resources)
    conf = {key: _conf_value(value) for key, value in settings.conf.items()}
    conf.update(task_overrides(request, settings.allowed_overrides))
    conf.update(acl_conf(organisation))
    if yarn and settings.deploy_mode == "cluster":
        for variable, setting in (env or {}).items():
            conf[f"spark.yarn.appMasterEnv.{variable}"] = conf[f"spark.executorEnv.{variable}"] = setting
        if secrets_file is not None:
            command += ["--files", f"{secrets_file}#{SECRETS_FILE}"]
            conf[f"spark.yarn.appMasterEnv.{SECRETS_ENV}"] = SECRETS_FILE
    if yarn:
        if archive is not None:
            command += ["--archives", f"{archive}#environment"]
            conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = YARN_PYTHON
            conf["spark.executorEnv.PYSPARK_PYTHON"] = YARN_PYTHON
        for name in ("PEACH_RUN_ID", "PEACH_CODOPS", "PEACH_TASK", "PEACH_VERSION"):
            value = {"PEACH_RUN_ID": request.run_id, "PEACH_CODOPS": task.codops}.get(name)
            value = value or {"PEACH_TASK": task.name, "PEACH_VERSION": request.version}.get(name, "")
            conf[f"spark.yarn.appMasterEnv.{name}"] = value
        conf["spark.yarn.maxAppAttempts"] = "1"  # a retried driver must not run the task twice
        conf["spark.yarn.submit.waitAppCompletion"] = "false"
        conf["spark.yarn.tags"] = ",".join(run_tags(request))
    elif python_path is not None:
        conf["spark.executorEnv.PYTHONPATH"] = str(python_path)
    for key in sorted(conf):
        command += ["--conf", f"{key}={conf[key]}"]
    return [*command, str(runner)]


def acl_conf(organisation: OrganisationSettings) -> dict[str, str]:
    """Spark's ACLs for an organisation's applications (Spark hands them to YARN as the application's
    VIEW_APP / MODIFY_APP ACLs too): users as given, groups written ``@group``. Nothing when none is set."""
    if not organisation.view_acls and not organisation.modify_acls:
        return {}
    conf = {"spark.acls.enable": "true"}
    for what, entries in (
        ("spark.ui.view.acls", organisation.view_acls),
        ("spark.modify.acls", organisation.modify_acls),
    ):
        users = [e for e in entries if not e.startswith("@")]
        groups = [e[1:] for e in entries if e.startswith("@")]
        if users:
            conf[what] = ",".join(users)
        if groups:
            conf[f"{what}.groups"] = ",".join(groups)
    return conf


def _resources(resources: Resources) -> list[str]:
    return [
        "--executor-cores",
        str(resources.executor_cores),
        "--executor-memory",
        resources.executor_memory,
        "--driver-memory",
        resources.driver_memory,
    ]


def pyspark_path(target: Path) -> Path:
    """A directory with only the scheduler's ``pyspark`` and ``py4j`` packages in it (symlinks)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("pyspark", "py4j"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ExecutionError(f"{name} is not installed next to the scheduler: local Spark cannot run")
        (target / name).symlink_to(next(iter(spec.submodule_search_locations)), target_is_directory=True)
    return target


def spark_settings(command: Sequence[str]) -> dict[str, Any]:
    """The settings of a spark-submit argument list: ``submit``, each ``--option`` (``queue``,
    ``num_executors``, ``executor_memory``, ...) and ``conf``; the application script is left out (the
    manifest holds its text). Secret values are replaced by ``<redacted>``."""
    settings: dict[str, Any] = {"submit": command[0] if command else None}
    conf: dict[str, str] = {}
    rest = list(command[1:])
    while len(rest) >= 2 and rest[0].startswith("--"):
        option, value = rest.pop(0), rest.pop(0)
        if option == "--conf":
            key, _, setting = value.partition("=")
            conf[key] = redact(key, setting)
        else:
            name = option[2:].replace("-", "_")
            settings[name] = redact(name, value)
    settings["conf"] = dict(sorted(conf.items()))
    return settings


def redact(name: str, value: str) -> str:
    """``value``, unless ``name`` names a secret; passwords inside URLs are masked either way."""
    if SECRET_NAME.search(name):
        return REDACTED
    return URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)


def private_secrets(prepared: Prepared) -> Path:
    """The run's secrets as a JSON file only its owner can read, in its work directory, for ``--files``:
    YARN localises it privately into the driver's container; it is removed when the run is over."""
    path = prepared.workdir / SECRETS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(dict(prepared.taskenv.secrets), file)
    prepared.private_files.append(path)
    return path


NO_ARTIFACTS_ON_YARN = (
    "artifacts: not collected: in YARN cluster mode the driver runs on the cluster, so files it "
    "writes stay there (the entry function's `artifacts` argument is a scratch directory that is "
    "discarded, and PEACH_ARTIFACTS_DIR is not set)"
)


class SparkExecutor(Executor):
    """Runs spark tasks with spark-submit. ``organisations`` gives each codops its queue and resources;
    ``resourcemanager`` is required for the ``yarn`` master."""

    kind = ExecutorKind.SPARK

    def __init__(
        self,
        environments: EnvironmentStore,
        runs_root: Path,
        settings: SparkSettings,
        organisations: Mapping[str, OrganisationSettings],
        *,
        resourcemanager: ResourceManager | None = None,
        tickets: TicketCache | None = None,
        log_server: str | None = None,
        lifetime_grace: float = 600.0,
        poll: float = 2.0,
        log_wait: float = 30.0,
        grace: float = 10.0,
        limits: LogLimits | None = None,
        pass_env: tuple[str, ...] = SPARK_PASS_ENV,
        keep_workdir: bool = False,
        artifacts_root: Path | None = None,
        source_env: Mapping[str, str] | None = None,
        proc_root: Path = PROC,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        popen: Popen = subprocess.Popen,
        cgroups: MemoryCgroups | None = None,
    ) -> None:
        self.environments, self.settings, self.organisations = environments, settings, organisations
        self.runs = LocalRuns(
            runs_root,
            pass_env=pass_env,
            keep_workdir=keep_workdir,
            artifacts_root=artifacts_root,
            source_env=source_env,
            organisations=organisations,
        )
        self.launcher = Launcher(limits or LogLimits(), grace, proc_root, clock, wall, popen, cgroups)
        self.resourcemanager, self.tickets = resourcemanager, tickets
        tracker = ApplicationTracker(resourcemanager, poll) if resourcemanager is not None else None
        self.yarn_options = YarnOptions(log_server, lifetime_grace, poll, log_wait, tracker=tracker)

    @property
    def runs_root(self) -> Path:
        return self.runs.root

    @property
    def yarn(self) -> bool:
        return self.settings.master == "yarn"

    def organisation(self, codops: str) -> OrganisationSettings:
        """The codops' profile; one not in the configuration gets the defaults and its own queue."""
        return self.organisations.get(codops) or OrganisationSettings(queue=codops)

    def demand(self, task: Task) -> Demand:
        """A spark-submit process; a local slot too unless the driver runs on the cluster (YARN cluster
        mode: spark-submit exits once YARN accepted the application)."""
        cluster = self.yarn and self.settings.deploy_mode == "cluster"
        return Demand(local=not cluster, submission=True)

    def prepare(self, request: RunRequest) -> Execution:
        if self.yarn and self.resourcemanager is None:
            raise ExecutionError("the spark master is yarn but no ResourceManager is configured")
        task_overrides(request, self.settings.allowed_overrides)  # refuse before building anything
        cluster = self.yarn and self.settings.deploy_mode == "cluster"
        prepared = self.runs.prepare(
            request, lambda: self._environment(request), artifacts=not cluster, secrets_in_env=not cluster
        )
        with prepared.building():
            secrets_file = private_secrets(prepared) if cluster and prepared.taskenv.secrets else None
            command = self._command(prepared, secrets_file)
        manifest = prepared.manifest(spark=spark_settings(command))
        masker = prepared.taskenv.masker()
        process = self.launcher.process(
            request, command, prepared.environ, prepared.workdir, prepared.log_path, masker=masker
        )
        execution: Execution
        if self.yarn:
            assert self.resourcemanager is not None
            execution = YarnExecution.submitting(
                process,
                self.resourcemanager,
                run_tag(request.run_id),
                self.yarn_options,
                cleanup=prepared.cleanup,
                manifest=manifest,
            )
        else:
            execution = ProcessExecution(process, cleanup=prepared.cleanup, manifest=manifest)
        execution.artifacts_dir = prepared.artifacts
        if prepared.artifacts is None:
            execution.artifacts_note = NO_ARTIFACTS_ON_YARN
        return execution

    def waiting(self, task: Task) -> str | None:
        python = (self.settings.python or self.environments.python) if self.yarn else None
        return self.environments.backing_off(task.requirements, python)

    def _environment(self, request: RunRequest) -> Environment:
        if self.yarn:  # shipped to the cluster with --archives, built against the cluster's interpreter
            python = self.settings.python or self.environments.python
            return self.environments.archive(request.task.requirements, python)
        return self.environments.ensure(request.task.requirements)

    def _command(self, prepared: Prepared, secrets_file: Path | None = None) -> list[str]:
        request, environ, python_path = prepared.request, prepared.environ, None
        if not self.yarn:
            python_path = pyspark_path(prepared.run_dir / "pyspark")
            environ["PYTHONPATH"] = str(python_path)
            environ["PYSPARK_PYTHON"] = environ["PYSPARK_DRIVER_PYTHON"] = str(prepared.env.python)
            home = spark_home()
            if "SPARK_HOME" not in environ and home is not None:
                environ["SPARK_HOME"] = str(home)
        organisation = self.organisation(request.task.codops)
        cluster = self.yarn and self.settings.deploy_mode == "cluster"
        if self.tickets is not None and cluster and organisation.hadoop_user:
            # spark-submit impersonates with the scheduler's own ticket (Spark refuses --principal with
            # --proxy-user); only in cluster mode, where its environment is not the task's
            environ.update(self.tickets.environ())
        log.debug("run %s (%s): spark-submit to %s", request.run_id, request.task.key, self.settings.master)
        return submit_command(
            self.settings,
            organisation,
            request,
            prepared.runner,
            archive=prepared.env.archive,
            python_path=python_path,
            env=prepared.taskenv.env,
            secrets_file=secrets_file,
            kerberos=self.tickets.settings if self.tickets is not None else None,
        )

    def recover(self, running: Sequence[RunningRun]) -> Recovery:
        """With a ResourceManager: the runs' applications re-attached (in any state), forgotten ones closed
        LOST, others' killed (``executors.yarn.recovery``); every run neither re-attached nor closed by
        YARN's answer is then closed as a local run (its spark-submit, if it survived, killed)."""
        recovery = Recovery()
        if self.resourcemanager is not None:  # also when the master changed since: its apps still run
            recovery = recover_applications(
                self.resourcemanager,
                running,
                self.launcher,
                self.yarn_options,
                self.runs.log_path,
                lambda run: organisation_masker(self.organisations.get(run.codops), self.runs.source_env),
            )
        rest = [r for r in running if r.run_id not in recovery.reattached and r.run_id not in recovery.closed]
        return recovery.merge(self.launcher.recover(rest))
