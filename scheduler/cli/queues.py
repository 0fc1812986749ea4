"""``peach-scheduler queues check|render``: the organisations' YARN queues, for operators.

Exit codes: 0 fine, 1 a queue problem (``check``) or the ResourceManager did not answer, 2 configuration.
"""

import argparse
import json
import sys
from pathlib import Path

from executors.yarn.client import ResourceManager
from executors.yarn.site import read_site
from queues.profiles import check, minimum_allocation, render
from scheduler.config import load_config
from scheduler.errors import ConfigError, ResourceManagerError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    queues = commands.add_parser(
        "queues",
        help="YARN queues of the organisations (check, render)",
        description="The per-organisation YARN queue mapping and resource profiles.",
    )

    def usage(_args: argparse.Namespace) -> int:
        queues.print_help()
        return EXIT_USAGE

    queues.set_defaults(handler=usage)
    sub = queues.add_subparsers(title="commands", metavar="COMMAND")
    for name, handler, help in (
        ("check", _check, "compare the configured queues with the live ResourceManager"),
        ("render", _render, "print Capacity Scheduler properties (XML) for the configured queues"),
    ):
        parser = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        parser.add_argument("--config", type=Path, metavar="FILE", help="operator configuration")
        if name == "check":
            parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=handler)


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        yarn = config.yarn
        rm = ResourceManager(yarn.resourcemanagers, timeout=yarn.timeout, retries=yarn.retries)
        minimum, _ = minimum_allocation(rm, read_site())
        results = check(config, rm.scheduler(), minimum)
    except (ConfigError, ResourceManagerError) as exc:
        print(f"peach-scheduler queues check: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    if args.json:
        print(json.dumps([vars(result) for result in results], indent=2))
    else:
        for result in results:
            print(f"{result.codops}: {'ok' if result.ok else 'PROBLEM'}: {result.message}")
    return EXIT_OK if all(result.ok for result in results) else EXIT_FAILED


def _render(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"peach-scheduler queues render: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(render(config), end="")
    return EXIT_OK
