"""What every command shares: the exit-code table, ``--config`` and ``--json``, the configuration and the
state database, and printing (tables, JSON).

A command is a handler ``(args) -> Exit`` registered with ``add_command``. It returns ``Exit.OK``, or
``Exit.FAILED`` when what it reports failed (a run, a check); it *raises* for every error, and
``scheduler.cli.main`` alone turns the exception into an exit code and prints it.

SQLAlchemy, pydantic settings and the service are imported inside the functions that need them, so that
``peach-scheduler validate`` in task authors' CI stays fast: those are the only function-local imports of
this package, and none of them breaks an import cycle.
"""

import argparse
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

if TYPE_CHECKING:
    from scheduler.config import Config
    from scheduler.store.store import Store


class Exit(IntEnum):
    """The exit codes of every command (SPEC §5, §7): nowhere else are exit codes defined."""

    OK = 0
    FAILED = 1  # a run failed, validation errors, a queue problem, not found, a request refused
    USAGE = 2  # a usage error (bad arguments) or a configuration error


class UsageError(Exception):
    """The command line is wrong: exit 2. ``parser``, when argparse found the error, prints its usage."""

    def __init__(self, message: str, parser: argparse.ArgumentParser | None = None) -> None:
        super().__init__(message)
        self.parser = parser


class Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` instead of printing and exiting, so that ``main`` reports a
    usage error like any other (as JSON with ``--json``). Subcommand parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self)


Handler: TypeAlias = Callable[[argparse.Namespace], Exit]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

CONFIG_HELP = "operator configuration (default: $PEACH_CONFIG, else the embedded default)"
RUN_COLUMNS = [
    "id",
    "codops",
    "task",
    "status",
    "short_version",
    "started_at",
    "duration_seconds",
    "outcome",
    "error",
]
WIDEST_CELL = 60  # longer cells (outcomes, errors) are cut with an ellipsis; --json has the full text


def add_command(
    commands: Commands,
    name: str,
    handler: Handler,
    help: str,
    description: str,
    *,
    json: str | None = None,
    config: bool = True,
    nested: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand calling ``handler(args)``. ``json``: the help of its ``--json`` (None: it prints no
    data); ``config``: it takes ``--config FILE``; ``nested``: a subcommand of a command with the same
    options (``runs show``), whose ``--config``/``--json`` default to the parent's instead of resetting
    them, so ``runs --json show RUN`` and ``runs show RUN --json`` agree."""
    parser = commands.add_parser(name, help=help, description=description)
    inherited: dict[str, Any] = {"default": argparse.SUPPRESS} if nested else {}
    if config:
        parser.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP, **inherited)
    if json is not None:
        parser.add_argument("--json", action="store_true", help=json, **inherited)
    parser.set_defaults(handler=handler, prog=parser.prog)
    return parser


def add_group(commands: Commands, name: str, help: str, description: str) -> Commands:
    """A command made of subcommands (``config``, ``queues``): alone, it prints its help and exits 2."""
    group = commands.add_parser(name, help=help, description=description)

    def usage(_args: argparse.Namespace) -> Exit:
        group.print_help()
        return Exit.USAGE

    group.set_defaults(handler=usage, prog=group.prog)
    return group.add_subparsers(title="commands", metavar="COMMAND")


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command was given ``--json`` (False for a command without the option)."""
    return bool(getattr(args, "json", False))


def fail(message: str) -> NoReturn:
    """Stop a command with a usage error (exit 2), e.g. an argument argparse cannot check."""
    raise UsageError(message)


def load(args: argparse.Namespace) -> "Config":
    """The operator configuration of ``--config`` (else ``$PEACH_CONFIG``, else the embedded default);
    ``ConfigError`` (exit 2) when it is missing or invalid."""
    from scheduler.config import load_config

    return load_config(args.config)


@contextmanager
def open_store(args: argparse.Namespace, config: "Config | None" = None) -> Iterator["Store"]:
    """The state database the configuration names, closed afterwards."""
    from scheduler.store.store import Store

    store = Store.from_url((config or load(args)).database_url)
    try:
        yield store
    finally:
        store.close()


def print_json(data: Any) -> None:
    """``data`` as indented JSON on standard output."""
    print(json.dumps(data, indent=2))


def print_json_line(data: Any) -> None:
    """``data`` as one line of JSON on standard output, flushed (JSON lines, for a stream)."""
    print(json.dumps(data), flush=True)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Aligned columns with an upper-case header; floats with one decimal, None as ``-``, one line per
    row (a cell over ``WIDEST_CELL`` characters is cut with an ellipsis)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.1f}"
        text = "-" if value is None else " ".join(str(value).split())
        return text if len(text) <= WIDEST_CELL else text[: WIDEST_CELL - 1] + "…"

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
