"""``peach-scheduler queues check|render``: the organisations' YARN queues, for operators.

``check`` exits 1 on a queue problem or when no ResourceManager answered. The YARN client and the queue
profiles are imported by the commands (see ``common``: ``validate`` stays fast).
"""

import argparse

from scheduler.cli.common import Commands, Exit, add_command, add_group, load, print_json


def register(commands: Commands) -> None:
    """``queues check`` and ``queues render``."""
    queues = add_group(
        commands,
        "queues",
        "YARN queues of the organisations (check, render)",
        "The per-organisation YARN queue mapping and resource profiles.",
    )
    check = "compare the configured queues with the live ResourceManager"
    render = "print Capacity Scheduler properties (XML) for the configured queues"
    add_command(queues, "check", _check, check, check[0].upper() + check[1:] + ".", json="print JSON")
    add_command(
        queues,
        "render",
        _render,
        render,
        render[0].upper() + render[1:] + ".",
        json='print {"xml": the properties file} instead',
    )


def _check(args: argparse.Namespace) -> Exit:
    from executors.yarn.client import ResourceManager
    from executors.yarn.site import endpoints, read_site
    from queues.profiles import check, minimum_allocation

    config = load(args)
    yarn = config.yarn
    site = read_site()
    addresses = endpoints(yarn, site).resourcemanagers  # the operator's, else the cluster's yarn-site.xml
    rm = ResourceManager(addresses, timeout=yarn.timeout, retries=yarn.retries)
    minimum = minimum_allocation(rm, site)
    results = check(config, rm.scheduler(), minimum)
    if args.json:
        print_json([vars(result) for result in results])
    else:
        for result in results:
            print(f"{result.codops}: {'ok' if result.ok else 'PROBLEM'}: {result.message}")
    return Exit.OK if all(result.ok for result in results) else Exit.FAILED


def _render(args: argparse.Namespace) -> Exit:
    from queues.profiles import render

    text = render(load(args))
    if args.json:
        print_json({"xml": text})
    else:
        print(text, end="")
    return Exit.OK
