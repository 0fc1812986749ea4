"""The service: ``run`` (forever), ``demo`` (on a sample repository) and ``once`` (one pass, then exit)."""

import argparse
import faulthandler
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.cli.common import RUN_COLUMNS, Commands, Exit, add_command, load, print_json, print_table
from scheduler.cli.sample import create_sample
from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.config import Config


def register(commands: Commands) -> None:
    """``run``, ``demo`` and ``once``."""
    run = add_command(
        commands,
        "run",
        _run,
        "run the service",
        "Run every loop forever, with the HTTP API, dashboard and "
        "/metrics. SIGTERM drains (no new runs); a second SIGTERM kills the running runs.",
    )
    run.add_argument("--port", type=int, help="HTTP port (overrides http.port)")
    demo = add_command(
        commands,
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
    add_command(
        commands,
        "once",
        _once,
        "one pass of every loop, then exit",
        "Settle leftovers, run one pass of every loop, print the runs. Exit 1 if any run did not succeed.",
        json="print the runs as a JSON array",
    )


def _run(args: argparse.Namespace, config: "Config | None" = None) -> Exit:
    """The service until SIGTERM (drained) or a second SIGTERM (runs killed); SIGHUP, or the file
    changing on disk, reloads the configuration."""
    from scheduler.config import CONFIG_ENV
    from scheduler.service.logconfig import configure_logging
    from scheduler.service.reload import Triggers
    from scheduler.service.service import Service, StopSignals

    config = config or load(args)
    configure_logging()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # every thread's stack, for a stuck service
    if args.port is not None:  # as PEACH_HTTP_PORT, so that a reload sees the same port
        os.environ["PEACH_HTTP_PORT"] = str(args.port)
        config = load(args)
    path = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    service = Service(config, config_path=path)
    signals = StopSignals()
    triggers = Triggers(path)
    service.start()
    service.watch_config(triggers)
    base = f"http://{config.http.host}:{service.port}"
    print(
        f"peach-scheduler is running: dashboard {base}/  API {base}/api/v1/  metrics {base}/metrics",
        flush=True,
    )
    signals.wait()
    service.request_stop()
    service.wait_stopped(config.loops.drain, signals)
    service.close()
    return Exit.OK


def _demo(args: argparse.Namespace) -> Exit:
    """``run`` on ``<workspace>/sample-repo``, created (a git repository) when missing."""
    workspace = args.workspace.resolve()
    repo = workspace / "sample-repo"
    if not repo.exists():
        create_sample(repo)
        print(f"created the sample organisation repository {repo}")
    os.environ["PEACH_WORKSPACE"] = str(workspace)
    return _run(args, load(args))


def _once(args: argparse.Namespace) -> Exit:
    """One pass of every loop; FAILED when any of its runs did not succeed."""
    from scheduler.service.logconfig import configure_logging
    from scheduler.service.service import Service

    config = load(args)
    configure_logging()
    service = Service(config)
    try:
        runs = service.once()
    finally:
        service.close()
    rows = [run.as_dict() for run in runs]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, RUN_COLUMNS)
    return Exit.OK if all(run.status == RunStatus.SUCCEEDED for run in runs) else Exit.FAILED
