"""Every validation rule of SPEC §2, each with a bad input that must be reported precisely while the
repository's valid tasks still load."""

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scheduler.limits import LoopLimits
from scheduler.spec.definitions import Severity, load_definitions
from tests.helpers.repos import GOOD_PY, notebook, write_repo


def tasks_yaml(bad: str, codops: str = "chrts", head: str = "") -> str:
    """peach.yaml with a valid task ``fine`` (lines 3-6) and a task ``bad`` (line 7, body from line 8)."""
    return (
        f"codops: {codops}\n{head}tasks:\n"
        "  fine:\n    notebook: code/good.py\n    method: main\n    executor: python\n"
        f"  bad:\n{textwrap.indent(textwrap.dedent(bad), '    ')}"
    )


def bad_task(body: str, **extra: str | bytes) -> dict[str, str | bytes]:
    return {"peach.yaml": tasks_yaml(body), **extra}


NB_TASK = "notebook: nb/t.ipynb\nmethod: train\nexecutor: python\n"


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes]
    message: str
    line: int | None
    file: str = "peach.yaml"
    sibling: bool = True  # the valid task ``fine`` of the same file loads too
    allowed: list[str] | None = None
    loaded: set[str] = field(default_factory=lambda: {"chrts/good"})


CASES = [
    Case(
        "yaml-syntax",
        {"peach.yaml": "codops: chrts\ntasks:\n  a: [1, 2\n  b: 3\n"},
        "YAML syntax error",
        4,
        sibling=False,
    ),
    Case("empty-file", {"peach.yaml": "\n# nothing here\n"}, "file is empty", 1, sibling=False),
    Case(
        "not-utf8",
        {"peach.yaml": b"codops: chrts\n# caf\xe9\ntasks: {}\n"},
        "not valid UTF-8 (byte 0xe9)",
        2,
        sibling=False,
    ),
    Case(
        "huge-file",
        {"peach.yaml": "codops: chrts\n" + "# padding\n" * 120_000},
        "over the 1,048,576-byte limit",
        None,
        sibling=False,
    ),
    Case(
        "alias-bomb",
        {
            "peach.yaml": "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
            "e: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e]\n"
        },
        "(alias bomb?)",
        6,
        sibling=False,
    ),
    Case(
        "two-documents",
        {"peach.yaml": "codops: chrts\ntasks: {}\n---\ncodops: sesr\n"},
        "expected exactly one YAML document",
        4,
        sibling=False,
    ),
    Case(
        "duplicate-key",
        {"peach.yaml": tasks_yaml("notebook: code/good.py\nmethod: main\nmethod: other\n")},
        "duplicate key 'method' (first defined on line 9)",
        10,
        sibling=False,
    ),
    Case(
        "merge-key",
        {"peach.yaml": "base: &base {method: main}\n" + tasks_yaml("<<: *base\nnotebook: x.py\n")},
        "merge keys (<<) are not supported",
        9,
        sibling=False,
    ),
    Case(
        "non-string-key",
        bad_task("notebook: code/good.py\nmethod: main\n1: x\n"),
        "keys must be strings",
        10,
        sibling=False,
    ),
    Case(
        "file-is-a-list",
        {"peach.yaml": "- codops: chrts\n"},
        "must be a mapping with 'codops' and 'tasks'",
        1,
        sibling=False,
    ),
    Case(
        "missing-codops",
        {"peach.yaml": "tasks:\n  a: {notebook: code/good.py, method: main}\n"},
        "missing required key 'codops'",
        1,
        sibling=False,
    ),
    Case(
        "bad-codops",
        {"peach.yaml": tasks_yaml("{}", codops="'Chrts!'")},
        "codops 'Chrts!' is not valid",
        1,
        sibling=False,
    ),
    Case(
        "reserved-codops",
        {"peach.yaml": tasks_yaml("{}", codops="metadata")},
        "codops 'metadata' is reserved for the shared metadata loop",
        1,
        sibling=False,
    ),
    Case(
        "codops-not-allowed",
        {"peach.yaml": tasks_yaml("{}", codops="sesr")},
        "this repository may not schedule tasks for codops 'sesr' (allowed: chrts)",
        1,
        sibling=False,
        allowed=["chrts"],
    ),
    Case(
        "unknown-file-key",
        {"peach.yaml": "codops: chrts\ntask:\n  a: {}\n"},
        "unknown file key 'task' (did you mean 'tasks'?)",
        2,
        sibling=False,
    ),
    Case(
        "tasks-not-mapping",
        {"peach.yaml": "codops: chrts\ntasks: [a, b]\n"},
        "'tasks' must be a non-empty mapping of task names",
        2,
        sibling=False,
    ),
    Case(
        "task-not-mapping",
        {"peach.yaml": tasks_yaml("").rstrip() + " just-a-string\n"},
        "must be a mapping with at least 'notebook' and 'method'",
        7,
    ),
    Case(
        "bad-task-name",
        {"peach.yaml": tasks_yaml("").replace("  bad:", "  Train Model:") + "    method: m\n"},
        "task name 'Train Model' is not valid",
        7,
    ),
    Case(
        "unknown-task-key",
        bad_task("notebok: code/good.py\nmethod: main\n"),
        "unknown task key 'notebok' (did you mean 'notebook'?)",
        8,
    ),
    Case("missing-method", bad_task("notebook: code/good.py\n"), "missing required key 'method'", 7),
    Case(
        "wrong-type-bool",
        bad_task("notebook: code/good.py\nmethod: main\nfull_notebook: 'yes'\n"),
        "full_notebook: Input should be a valid boolean",
        10,
    ),
    Case(
        "wrong-type-list",
        bad_task("notebook: code/good.py\nmethod: main\ndependencies: numpy\n"),
        "dependencies: Input should be a valid tuple",
        10,
    ),
    Case(
        "bad-executor",
        bad_task("notebook: code/good.py\nmethod: main\nexecutor: k8s\n"),
        "executor: Input should be 'spark' or 'python'",
        10,
    ),
    Case(
        "bad-method-name",
        bad_task("notebook: code/good.py\nmethod: train-model\n"),
        "method: 'train-model' is not a Python function name",
        9,
    ),
    Case(
        "bad-loop",
        bad_task("notebook: code/good.py\nmethod: main\nloop: sesr\n"),
        "loop must be 'chrts' (the default) or 'metadata', not 'sesr'",
        10,
    ),
    Case(
        "timeout-over-loop",
        bad_task("notebook: code/good.py\nmethod: main\ntimeout: 2h\n"),
        "timeout 7200s is above the chrts loop's limit of 3600s",
        10,
    ),
    Case(
        "timeout-over-metadata",
        bad_task("notebook: code/good.py\nmethod: main\nloop: metadata\ntimeout: 10m\n"),
        "timeout 600s is above the metadata loop's limit of 300s",
        11,
    ),
    Case(
        "bad-duration",
        bad_task("notebook: code/good.py\nmethod: main\nevery: 5 hrs\n"),
        "every: cannot parse duration '5 hrs'",
        10,
    ),
    Case(
        "negative-duration",
        bad_task("notebook: code/good.py\nmethod: main\ntimeout: -1\n"),
        "must be a finite number greater than zero",
        10,
    ),
    Case(
        "args-not-json",
        bad_task("notebook: code/good.py\nmethod: main\nargs: {who: 2024-01-01}\n"),
        "value of 'who' (date) is not plain JSON data; quote it",
        10,
    ),
    Case(
        "args-keyword",
        bad_task("notebook: code/good.py\nmethod: main\nargs: {class: 1}\n"),
        "'class' cannot be a keyword argument name",
        10,
    ),
    Case(
        "args-unknown-parameter",
        bad_task("notebook: code/good.py\nmethod: main\nargs: {epochs: 3}\n"),
        "method 'main' has no parameter 'epochs'",
        10,
    ),
    Case(
        "args-missing-required",
        bad_task("notebook: code/req.py\nmethod: run\n", **{"code/req.py": "def run(day):\n    pass\n"}),
        "method 'run' needs argument 'day'",
        7,
    ),
    Case(
        "spark-param-python-executor",
        bad_task(
            "notebook: code/sp.py\nmethod: run\nexecutor: python\n",
            **{"code/sp.py": "def run(spark):\n    pass\n"},
        ),
        "needs argument 'spark': give it under args (only the spark executor provides it)",
        7,
    ),
    Case(
        "spark-bad-key",
        bad_task("notebook: code/good.py\nmethod: main\nspark: {executor.memory: 4g}\n"),
        "'executor.memory' is not a Spark setting (expected spark.*)",
        10,
    ),
    Case(
        "missing-notebook",
        bad_task("notebook: nb/missing.ipynb\nmethod: main\n"),
        "notebook: 'nb/missing.ipynb' does not exist in the repository",
        8,
    ),
    Case(
        "path-traversal",
        bad_task("notebook: code/../../outside.py\nmethod: main\n"),
        "leaves the repository ('..' is not allowed)",
        8,
    ),
    Case(
        "absolute-path",
        bad_task("notebook: /etc/passwd.py\nmethod: main\n"),
        "'/etc/passwd.py' is absolute",
        8,
    ),
    Case(
        "wrong-extension",
        bad_task("notebook: code/model.R\nmethod: main\n", **{"code/model.R": "x <- 1"}),
        "must be a .ipynb notebook or a .py file",
        8,
    ),
    Case(
        "duplicate-across-files",
        {"peach.yaml": tasks_yaml("notebook: code/good.py\nmethod: main\n").replace("  bad:", "  good:")},
        "task chrts/good is already defined in peach.yaml:7",
        3,
        file="peach.conf/good.yaml",
    ),
    Case(
        "conflicting-pins-task",
        {
            "peach.yaml": tasks_yaml(
                "notebook: code/good.py\nmethod: main\ndependencies: [scikit-learn==1.4.0]\n",
                head="dependencies: [scikit-learn==1.5.2]\n",
            )
        },
        "conflicting pins for scikit-learn: 'scikit-learn==1.4.0' (peach.yaml:11) and "
        "'scikit-learn==1.5.2' (peach.yaml:2)",
        11,
    ),
    Case(
        "conflicting-pins-files",
        {
            "peach.yaml": tasks_yaml(
                "notebook: code/good.py\nmethod: main\n", head="dependencies: [pandas==2.2.3]\n"
            ),
            "peach.conf/z.yaml": "codops: chrts\ndependencies:\n  - pandas>=2.3\ntasks:\n"
            "  other: {notebook: code/good.py, method: main}\n",
        },
        "conflicting pins for pandas",
        3,
        file="peach.conf/z.yaml",
        loaded={"chrts/good", "chrts/bad"},
    ),
    Case(
        "invalid-requirement",
        bad_task("notebook: code/good.py\nmethod: main\ndependencies: ['numpy >>> 1']\n"),
        "'numpy >>> 1' is not a valid requirement",
        10,
    ),
    Case(
        "pip-option",
        bad_task("notebook: code/good.py\nmethod: main\ndependencies: [-r requirements.txt]\n"),
        "pip options are not allowed",
        10,
    ),
    Case(
        "missing-method-in-notebook",
        bad_task(NB_TASK, **{"nb/t.ipynb": notebook("def other():\n    pass\n")}),
        "method 'train' is not defined at the top level of nb/t.ipynb",
        9,  # the task's method key
    ),
    Case(
        "method-only-nested",
        bad_task(
            NB_TASK, **{"nb/t.ipynb": notebook("x = 1", "def outer():\n    def train():\n        pass\n")}
        ),
        "method 'train' is only defined inside 'outer'; define it at the top level",
        2,
        file="nb/t.ipynb",
    ),
    Case(
        "syntax-error-cell",
        bad_task(NB_TASK, **{"nb/t.ipynb": notebook("import os", "def train(:\n    pass\n")}),
        "syntax error",
        1,
        file="nb/t.ipynb",
    ),
    Case(
        "syntax-error-py",
        bad_task("notebook: code/b.py\nmethod: main\n", **{"code/b.py": "def main():\n    return (\n"}),
        "syntax error",
        2,
        file="code/b.py",
    ),
    Case(
        "magic-assignment",
        bad_task(NB_TASK, **{"nb/t.ipynb": notebook("def train():\n    files = !ls\n    return files\n")}),
        "assigns the output of an IPython magic or shell command",
        2,
        file="nb/t.ipynb",
    ),
    Case(
        "magic-run",
        bad_task(NB_TASK, **{"nb/t.ipynb": notebook("%run helpers.ipynb\ndef train():\n    pass\n")}),
        "%run is not supported",
        1,
        file="nb/t.ipynb",
    ),
    Case(
        "notebook-bad-json",
        bad_task(NB_TASK, **{"nb/t.ipynb": '{"cells": [\n  {"cell_type": "code",,}\n]}'}),
        "not a valid notebook (JSON)",
        2,
        file="nb/t.ipynb",
    ),
    Case(
        "notebook-v3",
        bad_task(NB_TASK, **{"nb/t.ipynb": '{"nbformat": 3, "worksheets": []}'}),
        "not a Jupyter notebook: no 'cells' list (nbformat 3; save it with Jupyter 4 or later)",
        None,
        file="nb/t.ipynb",
    ),
    Case(
        "notebook-not-utf8",
        bad_task(NB_TASK, **{"nb/t.ipynb": b'{"cells": [],\n "x": "\xff"}'}),
        "not valid UTF-8",
        2,
        file="nb/t.ipynb",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_reported_and_valid_tasks_still_load(case: Case, tmp_path: Path) -> None:
    result = load_definitions(write_repo(tmp_path, case.files), allowed_codops=case.allowed)

    matching = [p for p in result.errors if case.message in p.message]
    assert matching, f"no error containing {case.message!r} in {[str(p) for p in result.problems]}"
    problem = matching[0]
    assert (problem.file, problem.line) == (case.file, case.line), str(problem)
    expected = case.loaded | ({"chrts/fine"} if case.sibling else set())
    assert {t.key for t in result.tasks} >= expected
    assert "chrts/bad" not in {t.key for t in result.tasks} or "chrts/bad" in case.loaded


def test_there_are_at_least_thirty_distinct_bad_inputs() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 30


def test_symlinked_notebook_leaving_the_repository_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(GOOD_PY)
    repo = write_repo(tmp_path / "repo", bad_task("notebook: code/link.py\nmethod: main\n"))
    os.symlink(outside, repo / "code" / "link.py")

    result = load_definitions(repo)

    assert [str(p) for p in result.errors] == [
        "peach.yaml:8: task 'bad': notebook: 'code/link.py' is a symbolic link leading outside the repository"
    ]
    assert {t.key for t in result.tasks} == {"chrts/good", "chrts/fine"}


def test_symlink_inside_the_repository_is_fine(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, bad_task("notebook: code/alias.py\nmethod: main\n"))
    os.symlink("good.py", repo / "code" / "alias.py")

    assert {t.key for t in load_definitions(repo).tasks} == {"chrts/good", "chrts/fine", "chrts/bad"}


def test_symlinked_task_file_leaving_the_repository_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "evil.yaml"
    outside.write_text("codops: chrts\ntasks:\n  evil: {notebook: code/good.py, method: main}\n")
    repo = write_repo(tmp_path / "repo", {})
    os.symlink(outside, repo / "peach.conf" / "evil.yaml")

    result = load_definitions(repo)

    assert [str(p) for p in result.errors] == [
        "peach.conf/evil.yaml: is a symbolic link leading outside the repository"
    ]
    assert {t.key for t in result.tasks} == {"chrts/good"}


def test_repository_without_definitions_says_what_it_expected(tmp_path: Path) -> None:
    result = load_definitions(tmp_path)
    assert [str(p) for p in result.problems] == [
        "peach.yaml: no task definitions: expected peach.yaml or peach.conf/*.yaml"
    ]


def test_loop_limits_come_from_the_caller(tmp_path: Path) -> None:
    repo = write_repo(tmp_path, bad_task("notebook: code/good.py\nmethod: main\ntimeout: 2h\n"))
    result = load_definitions(repo, limits=LoopLimits(codops=3 * 3600))
    assert not result.errors
    assert {t.key: t.definition.timeout for t in result.tasks}["chrts/bad"] == 7200


def test_valid_task_is_fully_typed(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path,
        {
            "peach.yaml": "codops: chrts\ndependencies: [Scikit_Learn==1.5.2]\ntasks:\n"
            "  train_model:\n    notebook: nb/train.ipynb\n    method: train\n"
            "    loop: metadata\n    full_notebook: true\n    dependencies: [lightfm==1.17]\n"
            "    timeout: 4m\n    every: 6h\n    enabled: false\n    args: {epochs: 3}\n"
            "    spark: {spark.executor.memory: 4g}\n",
            "nb/train.ipynb": notebook("import math", "def train(spark, epochs=1):\n    return epochs\n"),
        },
    )
    result = load_definitions(repo)
    task = {t.key: t for t in result.tasks}["chrts/train_model"]

    assert not result.problems
    spec = task.definition
    assert (task.loop, task.executor, spec.full_notebook, spec.enabled) == ("metadata", "spark", True, False)
    assert (spec.timeout, spec.every, spec.args, spec.spark) == (
        240,
        21600,
        {"epochs": 3},
        {"spark.executor.memory": "4g"},
    )
    assert task.requirements == ("lightfm==1.17", "scikit-learn==1.5.2")
    assert (task.file, task.line) == ("peach.yaml", 4)
    assert len(task.code.chunks) == 2
    with pytest.raises(ValueError, match="frozen"):
        spec.method = "other"  # type: ignore[misc]


def test_magics_are_neutralised_with_warnings_and_the_task_still_loads(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path,
        bad_task(
            NB_TASK,
            **{
                "nb/t.ipynb": notebook(
                    "%matplotlib inline\n!pip install lightfm\ndef train():\n    %time x = 2\n    return x\n"
                )
            },
        ),
    )
    result = load_definitions(repo)

    assert not result.errors
    assert "chrts/bad" in {t.key for t in result.tasks}
    assert [str(p) for p in result.warnings] == [
        "nb/t.ipynb: cell 1, line 1: warning: task 'bad': IPython magic '%matplotlib inline' removed, "
        "never executed",
        "nb/t.ipynb: cell 1, line 2: warning: task 'bad': shell command '!pip install lightfm' removed, "
        "never executed; declare packages under 'dependencies' in the task YAML instead",
        "nb/t.ipynb: cell 1, line 4: warning: task 'bad': %time removed, the statement runs once without it",
    ]
    assert all(p.severity is Severity.WARNING for p in result.warnings)


def test_a_broken_notebook_shared_by_tasks_is_reported_for_each(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path,
        {
            "peach.yaml": "codops: chrts\ntasks:\n  a: {notebook: nb/x.ipynb, method: f, executor: python}\n"
            "  b: {notebook: nb/x.ipynb, method: g, executor: python}\n",
            "nb/x.ipynb": "{not json",
        },
    )
    result = load_definitions(repo)
    assert [(p.task, p.file) for p in result.errors] == [("a", "nb/x.ipynb"), ("b", "nb/x.ipynb")]
    assert {t.key for t in result.tasks} == {"chrts/good"}


def test_a_task_asking_for_a_secret_its_organisation_lacks_is_an_error_at_its_line(tmp_path: Path) -> None:
    body = "notebook: code/good.py\nmethod: main\nexecutor: python\nsecrets:\n  - REDIS_URL\n  - API_KEY\n"
    root = write_repo(tmp_path, bad_task(body))
    result = load_definitions(root, secrets={"chrts": ["REDIS_URL"]})
    (problem,) = result.errors
    assert (problem.file, problem.line, problem.task) == ("peach.yaml", 13, "bad")
    assert "organisation 'chrts' has no secret 'API_KEY' (it has: REDIS_URL)" in str(problem)
    assert "chrts/fine" in {t.key for t in result.tasks} and "chrts/bad" not in {t.key for t in result.tasks}

    known = load_definitions(root, secrets={"chrts": ["REDIS_URL", "API_KEY"]})
    bad = next(t for t in known.tasks if t.name == "bad")
    assert not known.errors and bad.definition.secrets == ("REDIS_URL", "API_KEY")
    assert not load_definitions(root).errors  # without the configuration: not checked (validate alone)


def test_secret_names_must_be_variable_names(tmp_path: Path) -> None:
    body = "notebook: code/good.py\nmethod: main\nexecutor: python\nsecrets: [REDIS-URL]\n"
    result = load_definitions(write_repo(tmp_path, bad_task(body)))
    assert [(p.line, "not a secret name" in p.message) for p in result.errors] == [(11, True)]
