"""What a run ran, captured when it starts: the commit, the runner script as executed, the exact
dependency set of its environment, the effective spark-submit settings (secrets redacted), the task's
arguments and its YAML definition. Stored per run (``run_manifests``) and read by ``runs show``, ``rerun``
and ``diff``.

Everything comes from what the executor prepared, not from a second computation: the execution's
``manifest()`` (``executors.base.ExecutionManifest``) names the runner file the command line runs, the
environment's interpreter (for YARN, the local build that was packed and shipped) and the Spark settings
parsed back from the spark-submit argument list (``executors.spark.spark_settings``, secrets redacted).
"""

import logging
from datetime import UTC, datetime

from executors.base import Execution
from executors.environments import freeze
from executors.runner import runner_script
from scheduler.errors import PeachError
from scheduler.runs.rundiff import readable_runner
from scheduler.spec.definitions import Task
from scheduler.store.records import Manifest

log = logging.getLogger(__name__)


def capture(task: Task, run_id: str, commit: str | None, execution: Execution | None) -> Manifest:
    """The manifest of a run of ``task``; ``execution`` is None when the run could not be prepared."""
    runner = runner_script(task)
    frozen: tuple[str, ...] | None = None
    known = execution.manifest() if execution is not None else None
    if known is not None and known.runner is not None and known.runner.is_file():
        runner = known.runner.read_text(encoding="utf-8")
    if known is not None and known.python is not None:
        try:
            frozen = freeze(known.python)
        except PeachError as exc:
            log.warning("run %s of %s: dependency set not recorded: %s", run_id, task.key, exc)
    return Manifest(
        run_id=run_id,
        recorded_at=datetime.now(UTC),
        commit=commit,
        runner=runner,
        requirements=task.requirements,
        frozen=frozen,
        spark=known.spark if known is not None else None,
        args=dict(task.definition.args),
        definition_file=task.file,
        definition=task.definition_text,
    )


def describe(manifest: Manifest) -> str:
    """The manifest as text for people (``peach-scheduler runs show``)."""
    lines = [
        f"commit:       {manifest.commit or '-'}",
        f"recorded at:  {manifest.recorded_at.isoformat(timespec='seconds').replace('+00:00', 'Z')}",
        f"arguments:    {manifest.args or '{}'}",
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
        "task code and runner script (the whole script: --json):",
        *(f"  {line}" for line in readable_runner(manifest.runner).splitlines()),
    ]
    return "\n".join(lines)
