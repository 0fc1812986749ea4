"""The single-cell trap: the entry cell reads a name that only another cell defines (issue 19)."""

import textwrap
from pathlib import Path

import pytest

from scheduler.spec.definitions import Definitions, load_definitions
from tests.helpers.repos import notebook, write_repo

YAML = "codops: chrts\ntasks:\n  split_task: {notebook: analysis.ipynb, method: split, executor: python}\n"


def load(tmp_path: Path, *cells: str, yaml: str = YAML) -> Definitions:
    cells = tuple(textwrap.dedent(cell) for cell in cells)
    repo = write_repo(
        tmp_path, {"peach.yaml": yaml, "analysis.ipynb": notebook(*cells, markdown_first=True)}, good=False
    )
    return load_definitions(repo)


def test_a_name_defined_in_another_cell_is_an_error_with_cell_and_line(tmp_path: Path) -> None:
    result = load(
        tmp_path,
        "import datetime\n",
        "def next_day(d):\n    return d + datetime.timedelta(days=1)\n",
        "def split(day='2026-01-01'):\n    d = datetime.date.fromisoformat(day)\n    return next_day(d)\n",
    )
    assert [str(p) for p in result.errors] == [
        "analysis.ipynb: cell 4, line 2: task 'split_task': 'datetime' is defined in cell 2, "
        "which does not run without full_notebook: true",
        "analysis.ipynb: cell 4, line 3: task 'split_task': 'next_day' is defined in cell 3, "
        "which does not run without full_notebook: true",
    ]
    assert result.tasks == ()  # the task is not loaded: its run would fail with NameError


def test_full_notebook_runs_every_cell_so_there_is_no_trap(tmp_path: Path) -> None:
    yaml = YAML.replace("executor: python}", "executor: python, full_notebook: true}")
    result = load(
        tmp_path, "def next_day(d):\n    return d\n", "def split():\n    return next_day(1)\n", yaml=yaml
    )
    assert not result.problems
    assert [t.name for t in result.tasks] == ["split_task"]


def test_a_name_defined_nowhere_is_only_a_warning(tmp_path: Path) -> None:
    result = load(tmp_path, "def split():\n    display(spark_context)\n")
    assert not result.errors
    assert [str(p) for p in result.warnings] == [
        "analysis.ipynb: cell 2, line 2: warning: task 'split_task': 'display' is not defined in this cell "
        "nor anywhere in the notebook",
        "analysis.ipynb: cell 2, line 2: warning: task 'split_task': 'spark_context' is not defined in this "
        "cell nor anywhere in the notebook",
    ]
    assert [t.name for t in result.tasks] == ["split_task"]


# Each entry cell binds, in one of Python's ways, every name it reads; the other cell defines the same
# names, so a false positive would be an error.
BINDING_FORMS = {
    "import": "import os\nimport os.path as osp\nfrom json import dumps as d\ndef split():\n"
    "    return os, osp, d\n",
    "def": "def helper():\n    return 1\ndef split():\n    return helper()\n",
    "class": "class Helper:\n    pass\ndef split():\n    return Helper()\n",
    "for": "for i in range(3):\n    pass\ndef split():\n    return i\n",
    "with": "with open('/dev/null') as f:\n    pass\ndef split():\n    return f\n",
    "comprehension": "def split(rows=()):\n    return [x for x in rows], {k: v for k, v in ()}, "
    "{y for y in rows}, list(z for z in rows), [[a for a in b] for b in rows]\n",
    "global": "def setup():\n    global conn\n    conn = 1\ndef split():\n    setup()\n    return conn\n",
    "global import": "def setup():\n    global np\n    import json as np\ndef split():\n    return np\n",
    "walrus": "if (total := 3):\n    pass\ndef split(rows=()):\n    if (n := len(rows)) > 0:\n"
    "        return n\n    return total, [w for r in rows if (w := r)], w\n",
    "except as": "try:\n    pass\nexcept ValueError as err:\n    saved = err\ndef split():\n"
    "    try:\n        return saved\n    except NameError as exc:\n        return exc\n",
    "parameters": "def split(a=0, /, b=1, *rest, c=3, d=2, **more):\n    f = lambda x, *y, **z: (x, y, z)\n"
    "    return a, b, rest, c, d, more, f\n",
    "nested and nonlocal": "def split():\n    count = 0\n    def inc():\n        nonlocal count\n"
    "        count += 1\n        return count\n    return inc\n",
    "class body": "def split():\n    class Row:\n        size = 3\n        double = size * 2\n"
    "    return Row\n",
    "match": "def split(p=(1, 2)):\n    match p:\n        case (first, *others):\n"
    "            return first, others\n"
    "        case {'k': value}:\n            return value\n",
    "async": "async def split():\n    async with ctx() as conn2:\n        async for item in conn2:\n"
    "            return item\ndef ctx():\n    return None\n",
    "annotations and del": "helper: int = 1\nlimit = 2\ndel limit\ndef split():\n    return helper\n",
}
OTHER_CELL = (
    "os = osp = d = helper = Helper = i = f = x = k = v = y = z = a = b = conn = np = total = n = w = 1\n"
    "err = saved = exc = rest = more = count = Row = size = first = others = value = ctx = item = 1\n"
    "conn2 = limit = 1\n"
)


@pytest.mark.parametrize("form", sorted(BINDING_FORMS))
def test_no_false_positive_for_names_bound_in_the_entry_cell(form: str, tmp_path: Path) -> None:
    result = load(tmp_path, OTHER_CELL, BINDING_FORMS[form])
    assert [str(p) for p in result.problems] == []
    assert [t.name for t in result.tasks] == ["split_task"]


def test_builtins_and_star_imports_are_not_reported(tmp_path: Path) -> None:
    result = load(tmp_path, "len = 3\n", "def split():\n    return len([]), print, ValueError, __name__\n")
    assert not result.problems
    starred = load(
        tmp_path / "star", "helper = 1\n", "from os.path import *\ndef split():\n    return helper\n"
    )
    assert not starred.problems  # the `*` import may bind anything: nothing can be said


def test_the_validate_command_prints_the_trap(tmp_path: Path) -> None:
    import subprocess
    import sys

    load(tmp_path, "def next_day(d):\n    return d\n", "\ndef split():\n    return next_day(1)\n")
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "validate", str(tmp_path), "--codops", "chrts"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert (
        "analysis.ipynb: cell 3, line 3: task 'split_task': 'next_day' is defined in cell 2, "
        "which does not run without full_notebook: true" in done.stdout
    )
