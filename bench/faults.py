"""The fault report: every fault scenario of tests/fault_scenarios.py against the real service, one table.

    .venv/bin/python bench/faults.py [--only git-down,disk-full ...] [--json]

Each scenario starts the service (short pauses and timeouts from its configuration), lets it settle,
breaks one part of the outside world, then mends it. Per scenario: what the service did, whether it
recovered by itself, the time from the fault to the service reporting it (metric, run history or API),
the time from the end of the fault to normal service, the runs affected, and how the API answered while
the fault lasted. Disk full needs permission to mount a tmpfs (root); without it the row says skipped.
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find tests.*

from tests.helpers.fault_scenarios import SCENARIOS, Report, as_row

COLUMNS = (
    "scenario",
    "recovered",
    "detect s",
    "recover s",
    "what the service did",
    "runs affected",
    "API during the fault",
)


def run(name: str) -> Report:
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"peach-fault-{name}-") as root:
        try:
            report = SCENARIOS[name](Path(root))
        except pytest.skip.Exception as skipped:
            report = Report(name, did=f"skipped: {skipped}")
        except Exception as exc:  # the scenario's expectation failed: that is the finding
            report = Report(name, did=f"expectation failed: {exc}")
    print(f"  {name}: {time.monotonic() - began:.0f} s", file=sys.stderr)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the service's warnings about the faults are expected
    names = [name for name in args.only.split(",") if name]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    print(f"running {len(names)} fault scenarios", file=sys.stderr)
    rows = [as_row(run(name)) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"\n{row['scenario']}: recovered {row['recovered']}, "
              f"detected in {row['detect s']} s, recovered in {row['recover s']} s")  # fmt: skip
        for column in COLUMNS[4:]:
            print(f"  {column}: {row[column]}")
    print()
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS[:4]}
    print("  ".join(c.ljust(widths[c]) for c in COLUMNS[:4]))
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in COLUMNS[:4]))


if __name__ == "__main__":
    main()
