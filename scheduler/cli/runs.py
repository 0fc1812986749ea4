"""``runs show``, ``rerun`` and ``diff``: what a run ran, running it again, and comparing two runs.

Like ``trigger``, they read and write the state database directly; a rerun request is taken by the task's
loop at its next pass. ``rerun`` checks at once that the run's commit is still in the organisation's
checkouts (the workspace of the operator configuration).
"""

import argparse
import json
import sys

from scheduler.cli.commands import EXIT_OK, Commands, _config, _store, add_command


def register(commands: Commands) -> None:
    rerun = add_command(
        commands,
        "rerun",
        _rerun,
        "run a past run again, at its commit",
        "Ask the task's loop to run RUN_ID again at its next pass: the code of the run's commit, the "
        "exact dependency set the run had installed, the same arguments. The new run says "
        "trigger=rerun and rerun_of=RUN_ID.",
    )
    rerun.add_argument("run_id", metavar="RUN_ID")
    rerun.add_argument("--json", action="store_true", help="print the request as JSON")
    diff = add_command(
        commands,
        "diff",
        _diff,
        "show what changed between two runs of a task",
        "Unified diffs of the code that ran (the runner script), the YAML definition and the "
        "dependency set, plus commit, Spark settings and argument changes, from RUN_A to RUN_B.",
    )
    diff.add_argument("run_a", metavar="RUN_A")
    diff.add_argument("run_b", metavar="RUN_B")
    diff.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _rerun(args: argparse.Namespace) -> int:
    from scheduler.errors import RerunError
    from scheduler.repos.sync import repository_syncs
    from scheduler.runs.reruns import check_request

    config = _config(args)
    store = _store(args)
    run = store.get_run(args.run_id)
    manifest = store.get_manifest(run.id)
    syncs = repository_syncs(config).get(run.codops)
    if syncs is None:
        raise RerunError(f"organisation {run.codops} is not in the configuration: cannot run {run.id} again")
    check_request([sync.path for sync in syncs], run, manifest)
    request = store.request_rerun(run.id, requested_by="cli")
    if args.json:
        print(json.dumps(request.as_dict(), indent=2))
    else:
        commit = (manifest.commit or "")[:12]
        print(
            f"run {run.id} of {run.codops}/{run.task} will run again at commit {commit} "
            f"at the next pass of loop {request.loop}"
        )
    return EXIT_OK


def _diff(args: argparse.Namespace) -> int:
    from scheduler.runs.rundiff import diff_runs

    store = _store(args)
    a, b = store.get_run(args.run_a), store.get_run(args.run_b)
    found = diff_runs(a, store.get_manifest(a.id), b, store.get_manifest(b.id))
    if args.json:
        print(json.dumps(found.as_dict(), indent=2))
    else:
        sys.stdout.write(found.text())
    return EXIT_OK
