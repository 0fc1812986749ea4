"""What a run ran, captured when it starts: the commit, the runner script as executed, the exact
dependency set of its environment, the effective spark-submit settings (secrets redacted), the task's
arguments and its YAML definition. Stored per run (``run_manifests``) and read by ``runs show``, ``rerun``
and ``diff``.

Everything comes from what the executor prepared, not from a second computation: the runner is the file
the command line names, the environment is the one the child's ``VIRTUAL_ENV`` points at (for YARN, the
local build that was packed and shipped), and the Spark settings are parsed back from the spark-submit
argument list.
"""

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from executors.base import Execution
from executors.environments import freeze
from executors.process import ProcessExecution
from executors.runner import runner_script
from scheduler.errors import PeachError
from scheduler.spec.definitions import Task
from scheduler.spec.taskspec import ExecutorKind
from scheduler.store.records import Manifest

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
# Setting names whose values are secrets (spark.ssl.keyPassword, fs.s3a.secret.key, ...).
SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|credential|(^|[._-])(access[._-]?)?key($|[._-])", re.I)
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/:@\s]*):[^/@\s]*@", re.I)


def capture(task: Task, run_id: str, commit: str | None, execution: Execution | None) -> Manifest:
    """The manifest of a run of ``task``; ``execution`` is None when the run could not be prepared."""
    runner = runner_script(task)
    frozen: tuple[str, ...] | None = None
    spark: dict[str, Any] | None = None
    if isinstance(execution, ProcessExecution):
        script = Path(execution.command[-1])
        if script.suffix == ".py" and script.is_file():
            runner = script.read_text(encoding="utf-8")
        venv = execution.env.get("VIRTUAL_ENV")
        if venv:
            try:
                frozen = freeze(Path(venv) / "bin" / "python")
            except PeachError as exc:
                log.warning("run %s of %s: dependency set not recorded: %s", run_id, task.key, exc)
        if task.executor is ExecutorKind.SPARK:
            spark = spark_settings(execution.command)
    return Manifest(
        run_id=run_id,
        recorded_at=datetime.now(UTC),
        commit=commit,
        runner=runner,
        requirements=task.requirements,
        frozen=frozen,
        spark=spark,
        args=dict(task.definition.args),
        definition_file=task.file,
        definition=task.definition_text,
    )


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


def describe(manifest: Manifest) -> str:
    """The manifest as text for people (``peach-scheduler runs show``)."""
    lines = [
        f"commit:      {manifest.commit or '-'}",
        f"recorded at: {manifest.recorded_at.isoformat(timespec='seconds')}",
        f"arguments:   {manifest.args or '{}'}",
        "requirements (declared):",
        *(f"  {item}" for item in manifest.requirements or ["(none)"]),
        "dependency set (installed):",
    ]
    if manifest.frozen is None:
        lines.append("  (not known: the environment was not built)")
    else:
        lines += [f"  {item}" for item in manifest.frozen or ["(empty)"]]
    if manifest.spark is not None:
        lines.append("spark-submit settings:")
        for key, value in manifest.spark.items():
            if key != "conf":
                lines.append(f"  {key}: {value}")
        lines += [f"  --conf {key}={value}" for key, value in manifest.spark.get("conf", {}).items()]
    lines += [
        f"definition ({manifest.definition_file}):",
        *(f"  {line}" for line in manifest.definition.splitlines()),
        "runner script:",
        *(f"  {line}" for line in manifest.runner.splitlines()),
    ]
    return "\n".join(lines)
