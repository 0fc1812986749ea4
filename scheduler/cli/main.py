"""``peach-scheduler``: a thin shell over the library. Exit codes live here and nowhere else."""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from scheduler.cli import commands as service_commands
from scheduler.cli import queues as queue_commands
from scheduler.cli import runs as rerun_commands
from scheduler.errors import ConfigError
from scheduler.spec.definitions import Definitions, load_definitions

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    code: int = args.handler(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peach-scheduler", description="Keeps every organisation's data-science tasks running."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check a repository's task definitions (for task authors' CI)",
        description="Check peach.yaml and peach.conf/*.yaml of a repository without running anything. "
        "Prints one 'path:line: message' per problem. Exit 0 when clean, 1 on errors, 2 on usage errors.",
    )
    validate.add_argument(
        "repo", nargs="?", default=".", metavar="REPO_DIR", help="repository root (default: .)"
    )
    validate.add_argument(
        "--codops",
        action="append",
        metavar="CODE",
        help="codops this repository may schedule into (repeatable; default: any)",
    )
    validate.add_argument("--strict", action="store_true", help="treat warnings as errors")
    validate.add_argument("--json", action="store_true", help="print machine-readable results")
    validate.set_defaults(handler=_validate)

    config = commands.add_parser(
        "config",
        help="inspect the operator configuration",
        description="Inspect the operator configuration (see the README's 'Operator configuration').",
    )
    config.set_defaults(handler=lambda _args: _usage(config))
    config_commands = config.add_subparsers(title="commands", metavar="COMMAND")
    show = config_commands.add_parser(
        "show",
        help="print the effective configuration, secrets masked",
        description="Print the configuration after defaults, PEACH_* overrides and path resolution. "
        "Passwords are masked. Exit 0, or 1 when the configuration is invalid.",
    )
    show.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="operator configuration file (default: $PEACH_CONFIG, else the embedded default)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.set_defaults(handler=_config_show)

    service_commands.register(commands)
    rerun_commands.register(commands)
    queue_commands.register(commands)
    for name, sub in commands.choices.items():
        sub.set_defaults(command_name=name)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _config_show(args: argparse.Namespace) -> int:
    try:
        from scheduler.config import load_config  # lazily: validate does not need it

        config = load_config(args.config)
    except ConfigError as exc:
        print(f"peach-scheduler config: {exc}", file=sys.stderr)
        return EXIT_ERRORS
    print(
        json.dumps(config.public(), indent=2) if args.json else config.show(), end="\n" if args.json else ""
    )
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    repo = Path(args.repo)
    if not repo.is_dir():
        print(f"peach-scheduler validate: {repo}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    result = load_definitions(repo, allowed_codops=args.codops)
    failed = bool(result.errors) or (args.strict and bool(result.warnings))
    if args.json:
        print(json.dumps(_as_json(result, failed), indent=2))
    else:
        for problem in result.problems:
            print(problem)
        print(_summary(result))
    return EXIT_ERRORS if failed else EXIT_OK


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


if __name__ == "__main__":
    sys.exit(main())
