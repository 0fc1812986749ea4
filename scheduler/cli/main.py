"""``peach-scheduler``: a thin shell over the library.

The parser is built from each command module's ``register``; this is the one place where an error becomes
an exit code (the table is ``common.Exit``: 0 ok, 1 failed or not found, 2 usage or configuration) and is
printed: ``prog: message`` on standard error, or with ``--json`` one line
``{"error": "...", "exit_code": N}`` on standard output.
"""

import json
import sys
from collections.abc import Sequence

from scheduler.cli import queues, runs, service, validate
from scheduler.cli.common import Exit, Parser, UsageError, wants_json
from scheduler.errors import ConfigError, PeachError

MODULES = (validate, service, runs, queues)  # the order of the commands in --help


def build_parser() -> Parser:
    """The ``peach-scheduler`` parser, every command registered."""
    parser = Parser(
        prog="peach-scheduler", description="Keeps every organisation's data-science tasks running."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: the process's arguments) describes; returns its exit code.

    Errors a command raises on purpose (``PeachError``, ``ValueError``, ``UsageError``) are printed and
    give exit 1 or 2; anything else is a bug and propagates with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:  # before the arguments are known: --json anywhere asks for JSON
        return _report(exc, Exit.USAGE, "--json" in argv, parser.prog)
    except SystemExit as exc:  # --help printed
        return int(exc.code or 0)
    if not hasattr(args, "handler"):
        parser.print_help()
        return Exit.USAGE
    try:
        return int(args.handler(args))
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        return _report(exc, code, wants_json(args), args.prog)


def exit_code(exc: Exception) -> Exit | None:
    """The exit code of an error a command raised; None for an unexpected one (a bug)."""
    if isinstance(exc, UsageError | ConfigError):
        return Exit.USAGE
    if isinstance(exc, PeachError | ValueError):
        return Exit.FAILED
    return None


def _report(exc: Exception, code: Exit, as_json: bool, prog: str) -> int:
    """Print ``exc`` as the JSON error object on stdout, or as text on stderr (argparse's usage line
    first for an error argparse found); returns ``code``."""
    if as_json:
        print(json.dumps({"error": str(exc), "exit_code": int(code)}))
    elif isinstance(exc, UsageError) and exc.parser is not None:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc}", file=sys.stderr)
    else:
        print(f"{prog}: {exc}", file=sys.stderr)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
