"""Tasks and runs as the state database has them: ``tasks``, ``runs`` (``show``, ``keep``), ``logs``,
``trigger``, ``rerun`` and ``diff``.

They read and write the state database directly (the operator configuration names it), so they work whether
or not the service is up; a trigger or rerun request is taken by the task's loop at its next pass. ``rerun``
checks at once that the run's commit is still in the organisation's checkouts (the configuration's
workspace). An unknown run or task raises ``RunNotFound``/``TaskNotFound``: exit 1.

The store and run modules are imported by the commands that use them (see ``common``: ``validate`` stays
fast).
"""

import argparse
import codecs
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.cli.common import (
    RUN_COLUMNS,
    Commands,
    Exit,
    add_command,
    load,
    open_store,
    print_json,
    print_json_line,
    print_table,
)
from scheduler.durations import format_duration
from scheduler.errors import ManifestNotFound, RerunError
from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.store.records import Run
    from scheduler.store.store import Store

MAX_LIMIT = 500  # the longest page of runs, as in the API's ``runs?limit=``
TASK_COLUMNS = [
    "codops",
    "task",
    "loop",
    "executor",
    "state",
    "last_status",
    "last_started_at",
    "last_duration_seconds",
    "why",
]
FOLLOW_POLL = 0.5  # seconds between two reads of a running run's log (another process appends to it)


def register(commands: Commands) -> None:
    """``tasks``, ``runs`` (with ``show`` and ``keep``), ``logs``, ``trigger``, ``rerun``, ``diff``."""
    tasks = add_command(
        commands,
        "tasks",
        _tasks,
        "list tasks with their state and last status",
        "List tasks.",
        json="print a JSON array of task objects",
    )
    tasks.add_argument("--codops", help="only this organisation")
    problems = add_command(
        commands,
        "problems",
        _problems,
        "list the validation problems of the served commits (INVALID tasks' included)",
        "List the problems found at the last load of every repository's task definitions, as "
        "'codops: file:line: task: message', errors and warnings; a broken head that is not served "
        "has its errors listed with a note saying so.",
        json="print a JSON array of problem objects",
    )
    problems.add_argument("--codops", help="only this organisation")
    _register_runs(commands)
    logs = add_command(
        commands,
        "logs",
        _logs,
        "print a run's log",
        "Print a run's log as stored. With --json: one object with the run's id, codops, task, status and "
        "its log as text; with --json -f: JSON lines, one object per piece of log read, the last one "
        "written once the run ended, with its final status.",
        json="print the run's status and log as JSON (JSON lines with -f)",
    )
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    trigger = add_command(
        commands,
        "trigger",
        _trigger,
        "run a task at its loop's next pass",
        "Ask the task's loop to run it at its next pass, even if it is disabled or not due.",
        json="print the request as JSON",
    )
    trigger.add_argument("task", metavar="CODOPS/TASK", type=_task_key)
    _register_rerun_and_diff(commands)


def _register_runs(commands: Commands) -> None:
    runs = add_command(
        commands,
        "runs",
        _runs,
        "list runs, newest first; 'runs show RUN_ID' for one run",
        "List runs, newest first. 'runs show RUN_ID' prints one run and what it ran (commit, runner "
        "script, installed dependency set, Spark settings, arguments, YAML definition).",
        json="print a JSON array of run objects",
    )
    runs.add_argument("--codops")
    runs.add_argument("--task")
    runs.add_argument("--status", choices=[status.value for status in RunStatus])
    runs.add_argument(
        "--limit", type=_limit, default=20, metavar="N", help=f"how many runs, 1 to {MAX_LIMIT} (default 20)"
    )
    runs.add_argument("--before", metavar="RUN_ID", help="the page after this run")
    run_commands = runs.add_subparsers(title="commands", metavar="COMMAND")
    show = add_command(
        run_commands,
        "show",
        _show,
        "one run and what it ran",
        "Print one run and what it ran.",
        json="print the run and its manifest as JSON",
        nested=True,
    )
    show.add_argument("run_id", metavar="RUN_ID")
    keep = add_command(
        run_commands,
        "keep",
        _keep,
        "keep a run's artifacts whatever the retention policy (--unset: let it prune them)",
        "Mark a run whose artifacts retention must keep, or with --unset remove the mark.",
        json="print the run as JSON",
        nested=True,
    )
    keep.add_argument("run_id", metavar="RUN_ID")
    keep.add_argument("--unset", action="store_true", help="remove the mark instead")


def _register_rerun_and_diff(commands: Commands) -> None:
    rerun = add_command(
        commands,
        "rerun",
        _rerun,
        "run a past run again, at its commit",
        "Ask the task's loop to run RUN_ID again at its next pass: the code of the run's commit, the "
        "exact dependency set the run had installed, the same arguments. The new run says "
        "trigger=rerun and rerun_of=RUN_ID.",
        json="print the request as JSON",
    )
    rerun.add_argument("run_id", metavar="RUN_ID")
    diff = add_command(
        commands,
        "diff",
        _diff,
        "show what changed between two runs of a task",
        "Unified diffs of the code that ran (the runner script), the YAML definition and the "
        "dependency set, plus commit, Spark settings and argument changes, from RUN_A to RUN_B.",
        json="print the comparison as JSON",
    )
    diff.add_argument("run_a", metavar="RUN_A")
    diff.add_argument("run_b", metavar="RUN_B")


def _limit(text: str) -> int:
    """``--limit``: a whole number from 1 to ``MAX_LIMIT`` (argparse reports anything else: exit 2)."""
    value = int(text) if text.strip().lstrip("+-").isdigit() else None
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return value


def _task_key(text: str) -> tuple[str, str]:
    """``CODOPS/TASK`` as (codops, task); anything else is a usage error."""
    codops, _, task = text.partition("/")
    if not codops or not task:
        raise argparse.ArgumentTypeError(f"expected CODOPS/TASK, got {text!r}")
    return codops, task


def _tasks(args: argparse.Namespace) -> Exit:
    with open_store(args) as store:
        tasks = [t.as_dict() for t in store.task_states(args.codops)]
    if args.json:
        print_json(tasks)
        return Exit.OK
    now = datetime.now(UTC)
    for task in tasks:
        if task["state"] == "RUNNING" and task["last_started_at"]:
            # one run per row: the running run's start with its status and time so far, not the
            # previous run's status and duration
            started = datetime.fromisoformat(task["last_started_at"].replace("Z", "+00:00"))
            task["last_status"], task["last_error"] = "RUNNING", None
            task["last_duration_seconds"] = max((now - started).total_seconds(), 0.0)
        task["why"] = task["reason"] or task["last_error"]  # why INVALID or PENDING, or why it failed
    print_table(tasks, TASK_COLUMNS)
    return Exit.OK


def _problems(args: argparse.Namespace) -> Exit:
    with open_store(args) as store:
        problems = store.problems(args.codops)
    if args.json:
        print_json([p.as_dict() for p in problems])
        return Exit.OK
    for problem in problems:
        print(f"{problem.codops}: {problem}")
    errors = sum(p.severity == "error" for p in problems)
    print(f"{errors} errors, {len(problems) - errors} warnings")
    return Exit.OK


def _runs(args: argparse.Namespace) -> Exit:
    from scheduler.runs.eta import with_estimates

    status = RunStatus(args.status) if args.status else None
    with open_store(args) as store:
        runs = store.list_runs(
            codops=args.codops, task=args.task, status=status, limit=args.limit, before=args.before
        )
        rows = with_estimates(runs, store.expected_seconds, datetime.now(UTC))
    if args.json:
        print_json(rows)
        return Exit.OK
    logs = {run.id: run.log_path for run in runs}
    for row in rows:
        row["progress"] = _progress_cell(row, logs.get(row["id"]))
    print_table(rows, [*RUN_COLUMNS, "progress"])
    return Exit.OK


def _progress_cell(run: dict[str, Any], log_path: str | None = None) -> str | None:
    """``42% epoch 3 of 7, ETA 1m30s`` for a running run (what is known of it); None otherwise."""
    if run["status"] != RunStatus.RUNNING:
        return None
    silent = _silent_for(log_path)
    if silent is not None:  # its supervisor stopped touching the log: the ETA would be a guess
        return f"no sign of life for {format_duration(silent)} (is the service down?)"
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


def _silent_for(log_path: str | None) -> float | None:
    """Seconds since a running run was last known alive, when that is well past its supervisor's
    heartbeat (``scheduler.runs.supervise.HEARTBEAT``: the service is down or stuck); None otherwise."""
    from scheduler.runs.supervise import HEARTBEAT

    try:
        last = Path(log_path).stat().st_mtime if log_path else None
    except OSError:
        return None
    if last is None:
        return None
    silent = time.time() - last
    return silent if silent > 6 * HEARTBEAT else None


def _show(args: argparse.Namespace) -> Exit:
    """``runs show RUN_ID``: the run and what it ran (its manifest; none for a run older than manifests)."""
    from scheduler.runs.manifests import describe

    with open_store(args) as store:
        run = store.get_run(args.run_id)
        try:
            manifest = store.get_manifest(run.id)
        except ManifestNotFound:
            manifest = None
    if args.json:
        print_json({**run.as_dict(), "manifest": manifest.as_dict() if manifest else None})
        return Exit.OK
    fields = run.as_dict()
    width = max(map(len, fields)) + 2
    for key, value in fields.items():
        print(f"{key + ':':<{width}}{'-' if value is None else value}")
    print("manifest:" if manifest else f"{'manifest:':<{width}}none (the run predates manifests)")
    if manifest:
        print("\n".join(f"  {line}" for line in describe(manifest).splitlines()))
    return Exit.OK


def _keep(args: argparse.Namespace) -> Exit:
    with open_store(args) as store:
        run = store.set_keep(args.run_id, not args.unset)
    if args.json:
        print_json(run.as_dict())
    else:
        print(
            f"run {run.id}: artifacts {'kept whatever the retention' if run.keep else 'subject to retention'}"
        )
    return Exit.OK


def _logs(args: argparse.Namespace) -> Exit:
    """The log as stored (its bytes as they are); as JSON, the text decoded as UTF-8 (bad bytes replaced)."""
    with open_store(args) as store:
        pieces = _log_pieces(store, args.run_id, args.follow)
        if not args.json:
            for _, chunk in pieces:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        elif args.follow:
            _print_log_lines(pieces)
        else:
            run, chunk = next(pieces)  # without -f, the one piece: the whole log
            text = chunk.decode(errors="replace")
            print_json(
                {"id": run.id, "codops": run.codops, "task": run.task, "status": run.status, "log": text}
            )
    return Exit.OK


def _print_log_lines(pieces: Iterator[tuple["Run", bytes]]) -> None:
    """``logs --json -f``: one JSON line ``{"id", "status", "log"}`` per piece of new text, and a last one
    (``log`` possibly empty) once the run has ended, with its final status."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for run, chunk in pieces:
        ended = run.status != RunStatus.RUNNING
        text = decoder.decode(chunk, final=ended)
        if text or ended:
            print_json_line({"id": run.id, "status": run.status, "log": text})


def _log_pieces(store: "Store", run_id: str, follow: bool) -> Iterator[tuple["Run", bytes]]:
    """(the run as last read, the log bytes new since the previous piece); with ``follow``, until the run
    has ended. A finished run's log is compressed: its path changes, offsets stay those of the text."""
    from scheduler.runs import runlogs

    run = store.get_run(run_id)
    offset = 0
    while True:
        chunk, _ = runlogs.read(Path(run.log_path) if run.log_path else None, offset)
        offset += len(chunk)
        yield run, chunk
        if not follow or run.status != RunStatus.RUNNING:
            return
        time.sleep(FOLLOW_POLL)  # polling a file another process appends to
        run = store.get_run(run_id)


def _trigger(args: argparse.Namespace) -> Exit:
    codops, task = args.task
    with open_store(args) as store:
        request = store.request_trigger(codops, task, requested_by="cli")
    if args.json:
        print_json(request.as_dict())
    else:
        print(f"{codops}/{task} will run at the next pass of loop {request.loop}")
    return Exit.OK


def _rerun(args: argparse.Namespace) -> Exit:
    from scheduler.repos.sync import repository_syncs
    from scheduler.runs.reruns import check_request

    config = load(args)
    with open_store(args, config) as store:
        run = store.get_run(args.run_id)
        manifest = store.get_manifest(run.id)
        syncs = repository_syncs(config).get(run.codops)
        if syncs is None:
            raise RerunError(
                f"organisation {run.codops} is not in the configuration: cannot run {run.id} again"
            )
        check_request([sync.path for sync in syncs], run, manifest)
        request = store.request_rerun(run.id, requested_by="cli")
    if args.json:
        print_json(request.as_dict())
    else:
        commit = (manifest.commit or "")[:12]
        print(
            f"run {run.id} of {run.codops}/{run.task} will run again at commit {commit} "
            f"at the next pass of loop {request.loop}"
        )
    return Exit.OK


def _diff(args: argparse.Namespace) -> Exit:
    from scheduler.runs.rundiff import diff_runs

    with open_store(args) as store:
        a, b = store.get_run(args.run_a), store.get_run(args.run_b)
        found = diff_runs(a, store.get_manifest(a.id), b, store.get_manifest(b.id))
    if args.json:
        print_json(found.as_dict())
    else:
        sys.stdout.write(found.text())
    return Exit.OK
