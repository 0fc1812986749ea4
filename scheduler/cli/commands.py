"""The service's commands: ``run``, ``demo``, ``once``, ``tasks``, ``runs``, ``logs``, ``trigger``.

Reading commands and ``trigger`` talk to the state database directly (the operator configuration names
it), so they work whether or not the service is up; a trigger is picked up at the loop's next pass.
Exit codes: 0 success, 1 a run failed (``once``) or a looked-up thing failed, 2 usage or configuration.
"""

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from scheduler.errors import ConfigError, PeachError

if TYPE_CHECKING:  # imported when a command needs them (SQLAlchemy, pydantic settings), so that
    from scheduler.config import Config  # `peach-scheduler validate` in task authors' CI stays fast
    from scheduler.store.records import Run
    from scheduler.store.store import Store

STATUSES = (
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "KILLED",
    "LOST",
)  # scheduler.store.models.RunStatus

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RUN_COLUMNS = ["id", "codops", "task", "status", "short_version", "started_at", "duration_seconds", "outcome"]
log = logging.getLogger(__name__)


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    commands: Commands, name: str, handler: Any, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand reading the operator configuration (``--config``), its errors printed, not raised."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument(
        "--config",
        type=Path,
        help="operator configuration (default: $PEACH_CONFIG, else the embedded default)",
    )
    parser.set_defaults(handler=lambda args: _guarded(handler, args))
    return parser


def register(commands: Commands) -> None:
    def command(name: str, handler: Any, help: str, description: str) -> argparse.ArgumentParser:
        return add_command(commands, name, handler, help, description)

    run = command(
        "run",
        _run,
        "run the service",
        "Run every loop forever, with the HTTP API, dashboard and "
        "/metrics. SIGTERM drains (no new runs); a second SIGTERM kills the running runs.",
    )
    run.add_argument("--port", type=int, help="HTTP port (overrides http.port)")
    demo = command(
        "demo",
        _demo,
        "create the sample repository and run the service on it",
        "The embedded default: a sample organisation repository under the workspace, SQLite, "
        "local processes. Runs until interrupted.",
    )
    demo.add_argument(
        "--workspace", type=Path, default=Path("peach-workspace"), help="default: ./peach-workspace"
    )
    demo.add_argument("--port", type=int, help="HTTP port (default 8080)")
    once = command(
        "once",
        _once,
        "one pass of every loop, then exit",
        "Settle leftovers, run one pass of every loop, print the runs. Exit 1 if any run did not succeed.",
    )
    once.add_argument("--json", action="store_true", help="print the runs as a JSON array")
    tasks = command("tasks", _tasks, "list tasks with their state and last status", "List tasks.")
    tasks.add_argument("--codops", help="only this organisation")
    tasks.add_argument("--json", action="store_true", help="print a JSON array of task objects")
    runs = command(
        "runs",
        _runs,
        "list runs, newest first; 'runs show RUN_ID' for one run",
        "List runs, newest first. 'runs show RUN_ID' prints one run and what it ran (commit, runner "
        "script, installed dependency set, Spark settings, arguments, YAML definition).",
    )
    runs.add_argument("--codops")
    runs.add_argument("--task")
    runs.add_argument("--status", choices=STATUSES)
    runs.add_argument("--limit", type=int, default=20, help="default 20, at most 500")
    runs.add_argument("--before", metavar="RUN_ID", help="the page after this run")
    runs.add_argument("--json", action="store_true", help="print a JSON array of run objects")
    run_commands = runs.add_subparsers(title="commands", metavar="COMMAND")
    show = run_commands.add_parser(
        "show", help="one run and what it ran", description="Print one run and what it ran."
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true", help="print the run and its manifest as JSON")
    show.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="as for runs")
    show.set_defaults(handler=lambda args: _guarded(_show, args), command_name="runs show")
    keep = run_commands.add_parser(
        "keep",
        help="keep a run's artifacts whatever the retention policy (--unset: let it prune them)",
        description="Mark a run whose artifacts retention must keep, or with --unset remove the mark.",
    )
    keep.add_argument("run_id", metavar="RUN_ID")
    keep.add_argument("--unset", action="store_true", help="remove the mark instead")
    keep.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="as for runs")
    keep.set_defaults(handler=lambda args: _guarded(_keep, args), command_name="runs keep")
    logs = command("logs", _logs, "print a run's log", "Print a run's log as stored.")
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    trigger = command(
        "trigger",
        _trigger,
        "run a task at its loop's next pass",
        "Ask the task's loop to run it at its next pass, even if it is disabled or not due.",
    )
    trigger.add_argument("task", metavar="CODOPS/TASK")


def _guarded(handler: Any, args: argparse.Namespace) -> int:
    try:
        code: int = handler(args)
        return code
    except ConfigError as exc:
        print(f"peach-scheduler {args.command_name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (PeachError, ValueError) as exc:
        print(f"peach-scheduler {args.command_name}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _config(args: argparse.Namespace) -> "Config":
    from scheduler.config import load_config

    return load_config(args.config)


def _store(args: argparse.Namespace) -> "Store":
    from scheduler.store.store import Store

    return Store.from_url(_config(args).database_url)


def _run(args: argparse.Namespace, config: "Config | None" = None) -> int:
    from scheduler.service.logconfig import configure_logging
    from scheduler.service.service import Service, install_signal_handlers

    configure_logging()
    config = config or _config(args)
    if args.port is not None:
        config = config.model_copy(update={"http": config.http.model_copy(update={"port": args.port})})
    service = Service(config)
    install_signal_handlers(service)
    service.start()
    base = f"http://{config.http.host}:{service.port}"
    print(
        f"peach-scheduler is running: dashboard {base}/  API {base}/api/v1/  metrics {base}/metrics",
        flush=True,
    )
    while not service.runtime.stopping.wait(0.5):
        pass
    service.wait_stopped(config.loops.drain)
    service.close()
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from scheduler.cli.sample import create_sample

    workspace = args.workspace.resolve()
    repo = workspace / "sample-repo"
    if not repo.exists():
        create_sample(repo)
        print(f"created the sample organisation repository {repo}")
    os.environ["PEACH_WORKSPACE"] = str(workspace)
    return _run(args, _config(args))


def _once(args: argparse.Namespace) -> int:
    from scheduler.service.logconfig import configure_logging
    from scheduler.service.service import Service

    configure_logging()
    service = Service(_config(args))
    try:
        runs = service.once()
    finally:
        service.close()
    _print_runs(runs, args.json)
    return EXIT_OK if all(run.status == "SUCCEEDED" for run in runs) else EXIT_FAILED


def _tasks(args: argparse.Namespace) -> int:
    tasks = [t.as_dict() for t in _store(args).task_states(args.codops)]
    if args.json:
        print(json.dumps(tasks, indent=2))
        return EXIT_OK
    _table(
        tasks,
        [
            "codops",
            "task",
            "loop",
            "executor",
            "state",
            "last_status",
            "last_started_at",
            "last_duration_seconds",
        ],
    )
    return EXIT_OK


def _runs(args: argparse.Namespace) -> int:
    from scheduler.runs.eta import with_estimates
    from scheduler.status import RunStatus

    status = RunStatus(args.status) if args.status else None
    store = _store(args)
    runs = store.list_runs(
        codops=args.codops, task=args.task, status=status, limit=args.limit, before=args.before
    )
    rows = with_estimates(runs, store.expected_seconds, datetime.now(UTC))
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        row["progress"] = _progress_cell(row)
    _table(rows, [*RUN_COLUMNS, "progress"])
    return EXIT_OK


def _progress_cell(run: dict[str, Any]) -> str | None:
    """``42% epoch 3 of 7, ETA 1m30s`` for a running run (what is known of it); None otherwise."""
    from scheduler.durations import format_duration

    if run["status"] != "RUNNING":
        return None
    parts = []
    if run["progress"] is not None:
        parts.append(
            f"{run['progress']:.0%}" + (f" {run['progress_message']}" if run["progress_message"] else "")
        )
    if run["eta_seconds"] is not None:
        parts.append(f"ETA {format_duration(run['eta_seconds'])}")
    if run["overdue"]:
        parts.append(f"overdue (usually {format_duration(run['expected_seconds'])})")
    return ", ".join(parts) or None


def _logs(args: argparse.Namespace) -> int:
    from scheduler.runs import runlogs

    store = _store(args)
    run = store.get_run(args.run_id)
    offset = 0
    while True:  # a finished run's log is compressed: the path changes, offsets stay those of the text
        chunk, _ = runlogs.read(Path(run.log_path) if run.log_path else None, offset)
        offset += len(chunk)
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        if not args.follow or run.status != "RUNNING":
            return EXIT_OK
        time.sleep(0.5)  # polling a file another process appends to
        run = store.get_run(args.run_id)


def _show(args: argparse.Namespace) -> int:
    """``runs show RUN_ID``: the run and what it ran."""
    from scheduler.errors import ManifestNotFound
    from scheduler.runs.manifests import describe

    store = _store(args)
    run = store.get_run(args.run_id)
    try:
        manifest = store.get_manifest(run.id)
    except ManifestNotFound:
        manifest = None
    if args.json:
        print(json.dumps({**run.as_dict(), "manifest": manifest.as_dict() if manifest else None}, indent=2))
        return EXIT_OK
    for key, value in run.as_dict().items():
        print(f"{key + ':':<17}{'-' if value is None else value}")
    print("manifest:" if manifest else "manifest:        none (the run predates manifests)")
    if manifest:
        print("\n".join(f"  {line}" for line in describe(manifest).splitlines()))
    return EXIT_OK


def _keep(args: argparse.Namespace) -> int:
    run = _store(args).set_keep(args.run_id, not args.unset)
    print(f"run {run.id}: artifacts {'kept whatever the retention' if run.keep else 'subject to retention'}")
    return EXIT_OK


def _trigger(args: argparse.Namespace) -> int:
    codops, _, task = args.task.partition("/")
    if not task:
        raise ValueError(f"expected CODOPS/TASK, got {args.task!r}")
    request = _store(args).request_trigger(codops, task, requested_by="cli")
    print(f"{codops}/{task} will run at the next pass of loop {request.loop}")
    return EXIT_OK


def _print_runs(runs: Iterable["Run"], as_json: bool) -> None:
    rows = [run.as_dict() for run in runs]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    _table(rows, RUN_COLUMNS)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.1f}"
        return "-" if value is None else str(value)

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
