"""``validate`` (task authors' CI: a repository's definitions, nothing run) and ``config show`` (operators).

``validate`` must stay fast: it imports the spec layer only, and the operator configuration (pydantic
settings) only when ``--config`` is given.
"""

import argparse
from pathlib import Path

from scheduler.cli.common import Commands, Exit, add_command, add_group, fail, load, print_json
from scheduler.spec.definitions import Definitions, load_definitions


def register(commands: Commands) -> None:
    """``validate`` and ``config show``."""
    validate = add_command(
        commands,
        "validate",
        _validate,
        "check a repository's task definitions (for task authors' CI)",
        "Check peach.yaml and peach.conf/*.yaml of a repository without running anything. "
        "Prints one 'path:line: message' per problem. Exit 0 when clean, 1 on errors, 2 on usage or "
        "configuration errors.",
        json="print machine-readable results",
        config=False,
    )
    validate.add_argument(
        "repo", nargs="?", default=".", metavar="REPO_DIR", help="repository root (default: .)"
    )
    validate.add_argument(
        "--codops",
        action="append",
        metavar="CODE",
        help="codops this repository may schedule into (repeatable; default: those of --config, else any)",
    )
    validate.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="operator configuration: its organisations are the codops allowed (unless --codops is "
        "given) and its loop timeouts the limits of a task's timeout ($PEACH_CONFIG is not read)",
    )
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")

    config = add_group(
        commands,
        "config",
        "inspect the operator configuration",
        "Inspect the operator configuration (see the README's 'Operator configuration').",
    )
    add_command(
        config,
        "show",
        _config_show,
        "print the effective configuration, secrets masked",
        "Print the configuration after defaults, PEACH_* overrides and path resolution. "
        "Passwords are masked. Exit 0, or 2 when the configuration is missing or invalid.",
        json="print JSON instead of YAML",
    )


def _validate(args: argparse.Namespace) -> Exit:
    repo = Path(args.repo)
    if not repo.is_dir():
        fail(f"{repo}: not a directory")
    allowed, limits, notifications = args.codops, None, None
    if args.config is not None:
        config = load(args)
        allowed = allowed or sorted(config.organisations)
        limits = config.loops.limits
        notifications = {codops: org.notifications for codops, org in config.organisations.items()}
    result = load_definitions(repo, allowed_codops=allowed, limits=limits, notifications=notifications)
    failed = bool(result.errors) or (args.strict and bool(result.warnings))
    if args.json:
        print_json(_as_json(result, failed))
    else:
        for problem in result.problems:
            print(problem)
        print(_summary(result))
    return Exit.FAILED if failed else Exit.OK


def _config_show(args: argparse.Namespace) -> Exit:
    from executors.yarn.site import endpoints, read_site

    config = load(args)
    found = endpoints(config.yarn, read_site())  # what the operator did not say, from yarn-site.xml
    effective: dict[str, dict[str, object]] = {
        "resourcemanagers": {"value": list(found.resourcemanagers), "from": found.resourcemanagers_from},
        "log_server": {"value": found.log_server, "from": found.log_server_from},
    }
    if args.json:
        print_json({**config.public(), "effective_yarn": effective})
    else:
        print(config.show(), end="")
        print("# effective YARN endpoints (spark.master yarn):")
        for key, item in effective.items():
            print(f"#   yarn.{key}: {item['value']}  (from {item['from']})")
    return Exit.OK


def _as_json(result: Definitions, failed: bool) -> dict[str, object]:
    return {
        "ok": not failed,
        "files": list(result.files),
        "tasks": [
            {
                "codops": t.codops,
                "task": t.name,
                "file": t.file,
                "line": t.line,
                "notebook": t.definition.notebook,
                "method": t.definition.method,
                "executor": t.executor.value,
                "loop": t.loop,
                "enabled": t.definition.enabled,
                "requirements": list(t.requirements),
            }
            for t in result.tasks
        ],
        "problems": [p.as_dict() for p in result.problems],
    }


def _summary(result: Definitions) -> str:
    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    files = ", ".join(result.files) or "none"
    return (
        f"{count(len(result.errors), 'error')}, {count(len(result.warnings), 'warning')}; "
        f"{count(len(result.tasks), 'task')} valid in {count(len(result.files), 'file')} ({files})"
    )
