"""Hostile input never crashes the loader: whatever bytes a repository holds, the result is problems."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.definitions import load_definitions
from tests.repos import write_repo

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
