"""Hostile input never crashes the loader: whatever bytes a repository holds, the result is problems."""

import contextlib
import io
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.cli import main as cli
from scheduler.spec import notebooks
from scheduler.spec.definitions import load_definitions
from tests.helpers.repos import notebook, write_repo

pytestmark = pytest.mark.fuzz
EXAMPLES = int(os.environ.get("PEACH_FUZZ_EXAMPLES", "40"))  # per test below; the cheap ones above run more
FUZZ = settings(
    max_examples=max(150, EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
TOKENS = [*"abc:- \n\t[]{}&*!|>'\"#%@`,?<=~0123456789.", "tasks", "codops", "notebook", "method"]
YAMLISH = st.lists(st.sampled_from(TOKENS), max_size=80).map("".join)
TASK_KEYS = [
    "notebook",
    "method",
    "executor",
    "loop",
    "timeout",
    "every",
    "args",
    "spark",
    "enabled",
    "full_notebook",
    "dependencies",
    "bogus",
]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def assert_loads_without_raising(repo: Path) -> None:
    result = load_definitions(repo)
    assert "chrts/good" in {t.key for t in result.tasks}  # the valid file is never lost
    for problem in result.problems:
        assert problem.message and problem.file


@FUZZ
@given(raw=st.binary(max_size=400) | YAMLISH.map(str.encode))
def test_arbitrary_task_file_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    repo = write_repo(tmp_path_factory.mktemp("r"), {"peach.yaml": raw})
    assert_loads_without_raising(repo)


@FUZZ
@given(body=st.dictionaries(st.sampled_from(TASK_KEYS), JSONISH, max_size=6))
def test_arbitrary_task_bodies(tmp_path_factory: pytest.TempPathFactory, body: dict[str, object]) -> None:
    text = json.dumps({"codops": "chrts", "tasks": {"t": body}})  # JSON is YAML
    repo = write_repo(tmp_path_factory.mktemp("r"), {"peach.yaml": text})
    assert_loads_without_raising(repo)


@FUZZ
@given(
    cells=st.lists(
        st.text(alphabet=st.sampled_from(list("def train():%!?\n ()=x1'\"\\#")), max_size=60), max_size=4
    ),
    full=st.booleans(),
)
def test_arbitrary_notebook_cells(
    tmp_path_factory: pytest.TempPathFactory, cells: list[str], full: bool
) -> None:
    nb = json.dumps({"nbformat": 4, "cells": [{"cell_type": "code", "source": c} for c in cells]})
    task = {"notebook": "n.ipynb", "method": "train", "full_notebook": full}
    yaml = json.dumps({"codops": "chrts", "tasks": {"t": task}})
    repo = write_repo(tmp_path_factory.mktemp("r"), {"peach.yaml": yaml, "n.ipynb": nb})
    assert_loads_without_raising(repo)


# -- notebooks: arbitrary JSON, odd cells, magics, bytes; through the loader and `peach-scheduler validate`

NOTEBOOK_FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=20),  # far above any real example: only a hang trips it
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAGIC_LINES = [
    "%%bash",
    "%%time",
    "%%capture out",
    "%time x = 1",
    "%timeit -n1 y = 2",
    "%matplotlib inline",
    "%run other.py",
    "%pip install pandas",
    "!ls -la",
    "!!pwd",
    "files = !ls",
    "x = %env HOME",
    "?print",
    "len??",
    "def train():",
    "    return 1",
    "    %time z = 3",
    "    !echo hi",
    "async def train(a, *, b):",
    "train = 3",
    "import os as train",
    "x = a % b",
    "print('%d' % 3)",
    "",
]
SOURCE = (
    st.text(max_size=80)
    | st.lists(st.sampled_from(MAGIC_LINES), max_size=8).map("\n".join)
    | st.lists(st.text(max_size=20), max_size=4)
    | JSONISH
)
CELL = (
    st.fixed_dictionaries(
        {"cell_type": st.sampled_from(["code", "markdown", "raw", "heading", ""]) | JSONISH},
        optional={"source": SOURCE, "outputs": JSONISH, "metadata": JSONISH, "execution_count": JSONISH},
    )
    | JSONISH
)
NOTEBOOK = (
    st.fixed_dictionaries(
        {"cells": st.lists(CELL, max_size=6) | JSONISH},
        optional={"nbformat": st.integers() | JSONISH, "metadata": JSONISH, "nbformat_minor": JSONISH},
    )
    | JSONISH
)


def validate_cli(repo: Path) -> dict[str, Any]:
    """`peach-scheduler validate REPO --json` in this process: exit code 0/1 and JSON, never a crash."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["validate", str(repo), "--json"])
    assert code in (0, 1)
    result: dict[str, Any] = json.loads(out.getvalue())
    assert result["ok"] is (code == 0)
    return result


def assert_notebook_handled(repo: Path, notebook: str = "n.ipynb") -> None:
    result = load_definitions(repo)
    assert "chrts/good" in {t.key for t in result.tasks}
    keys = {t.key for t in result.tasks}
    for problem in result.problems:
        assert problem.message and problem.file in ("peach.yaml", notebook, "peach.conf/good.yaml")
    if "chrts/t" not in keys:  # the task was refused: the reason names the notebook or the task file
        assert any(p.task == "t" and p.severity == "error" for p in result.problems)
    cli_result = validate_cli(repo)
    assert {f"{t['codops']}/{t['task']}" for t in cli_result["tasks"]} == keys
    assert len(cli_result["problems"]) == len(result.problems)


def notebook_repo(root: Path, notebook: bytes, full: bool, method: str = "train") -> Path:
    task = {"notebook": "n.ipynb", "method": method, "full_notebook": full, "executor": "python"}
    yaml = json.dumps({"codops": "chrts", "tasks": {"t": task}})
    return write_repo(root, {"peach.yaml": yaml, "n.ipynb": notebook})


@NOTEBOOK_FUZZ
@given(notebook=NOTEBOOK, full=st.booleans())
def test_arbitrary_notebook_json(
    tmp_path_factory: pytest.TempPathFactory, notebook: object, full: bool
) -> None:
    raw = json.dumps(notebook).encode()
    assert_notebook_handled(notebook_repo(tmp_path_factory.mktemp("r"), raw, full))


@NOTEBOOK_FUZZ
@given(
    lines=st.lists(st.lists(st.sampled_from(MAGIC_LINES), max_size=8), min_size=1, max_size=4),
    full=st.booleans(),
)
def test_notebooks_full_of_magics(
    tmp_path_factory: pytest.TempPathFactory, lines: list[list[str]], full: bool
) -> None:
    raw = notebook(*("\n".join(cell) for cell in lines)).encode()
    repo = notebook_repo(tmp_path_factory.mktemp("r"), raw, full)
    assert_notebook_handled(repo)
    for task in load_definitions(repo).tasks:  # whatever was accepted is plain Python, magics gone
        for chunk in task.code.chunks:
            compile(chunk.code, chunk.filename, "exec")
            assert not any(line.lstrip().startswith(("%", "!")) for line in chunk.code.splitlines())


@NOTEBOOK_FUZZ
@given(
    raw=st.binary(max_size=300) | st.text(max_size=100).map(lambda t: t.encode("utf-16")), full=st.booleans()
)
def test_notebook_bytes_and_bad_unicode(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes, full: bool
) -> None:
    assert_notebook_handled(notebook_repo(tmp_path_factory.mktemp("r"), raw, full))


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,  # JSON nested deeper than the parser's recursion
        b'{"cells": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        notebook("def train():\n    return " + "(" * 5000 + "1" + ")" * 5000).encode(),
        notebook("def train():\n    return " + "-" * 200_000 + "1").encode(),
        notebook("def train():\n    pass\n" + "x = 1\n" * 200_000).encode(),  # a long cell
        notebook(*["def train():\n    pass"] * 5000).encode(),  # many cells defining it
        notebook("def train():\n    return '" + "\ud800" * 3 + "'").encode("utf-8", "surrogatepass"),
        b"\xef\xbb\xbf" + notebook("def train():\n    return 1").encode(),  # BOM
        notebook("def train():\n    return '\0'").encode(),
    ],
    ids=[
        "deep-json",
        "deep-cells",
        "deep-parens",
        "deep-unary",
        "long-cell",
        "many-cells",
        "surrogates",
        "bom",
        "nul",
    ],
)
def test_extreme_notebooks(tmp_path: Path, raw: bytes) -> None:
    assert_notebook_handled(notebook_repo(tmp_path, raw, full=False))


def test_notebook_over_the_size_limit_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notebooks, "MAX_SOURCE_BYTES", 1000)
    repo = notebook_repo(tmp_path, notebook("def train():\n    pass", "x = 1\n" * 400).encode(), full=False)
    problems = [p for p in load_definitions(repo).problems if p.task == "t"]
    assert [p.file for p in problems] == ["n.ipynb"] and "limit" in problems[0].message


# -- whole repository trees: odd names, symlinks, special files, huge files ---------------------------

NAME = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]), min_size=1, max_size=12
).filter(lambda n: n not in (".", "..")) | st.binary(min_size=1, max_size=8).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
).map(os.fsdecode)
ENTRY = st.tuples(
    st.sampled_from(["peach.conf", ".", "code", "peach.conf/sub"]),
    NAME | st.sampled_from(["peach.yaml", "x.yaml", "n.ipynb", "good.py"]).flatmap(lambda n: st.just(n)),
    st.sampled_from(
        ["yaml", "junk", "dir", "link-in", "link-out", "link-loop", "link-dangling", "fifo", "empty"]
    ),
)


def build_entry(repo: Path, outside: Path, folder: str, name: str, kind: str) -> None:
    parent = repo / folder
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / (name if kind == "dir" or "." in name else f"{name}.yaml")
    if path.exists() or path.is_symlink() or path.name in ("good.yaml", "good.py"):
        return
    match kind:
        case "yaml":
            path.write_text("codops: chrts\ntasks:\n  t2: {notebook: code/good.py, method: main}\n")
        case "junk":
            path.write_bytes(b"\xff\xfe: [\n")
        case "dir":
            path.mkdir()
        case "link-in":
            path.symlink_to(repo / "code" / "good.py")
        case "link-out":
            path.symlink_to(outside)
        case "link-loop":
            path.symlink_to(path)
        case "link-dangling":
            path.symlink_to(repo / "nowhere")
        case "fifo":
            os.mkfifo(path)
        case "empty":
            path.write_bytes(b"")


@NOTEBOOK_FUZZ
@given(entries=st.lists(ENTRY, max_size=6))
def test_arbitrary_repository_trees(
    tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[str, str, str]]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    outside = root / "other-org-secret.yaml"
    outside.write_text("codops: chrts\ntasks:\n  stolen: {notebook: code/good.py, method: main}\n")
    repo = write_repo(root / "repo", {})
    for folder, name, kind in entries:
        build_entry(repo, outside, folder, name, kind)
    result = load_definitions(repo)
    assert "chrts/good" in {t.key for t in result.tasks}
    assert "chrts/stolen" not in {t.key for t in result.tasks}  # never read through a link out
    for problem in result.problems:
        assert problem.message and problem.file
        assert problem.file.isprintable(), f"file name shown raw: {problem.file!r}"
        problem.file.encode("utf-8")  # storable and printable: no lone surrogates
    validate_cli(repo)
