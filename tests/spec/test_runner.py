"""Runner scripts generated from real notebooks, run by a real ``python`` subprocess."""

import subprocess
import sys
from pathlib import Path

from executors.runner import runner_script
from scheduler.spec.definitions import load_definitions
from tests.helpers.repos import notebook, write_repo

HELPERS = "import math\n\ndef area(r):\n    return math.pi * r * r\n"
TRAIN = (
    "%matplotlib inline\n"
    "def train(radius, label='area'):\n"
    "    %time value = area(radius)\n"
    "    print(f'{label}={value:.2f}')\n"
)


def run_task(tmp_path: Path, yaml: str, files: dict[str, str | bytes]) -> subprocess.CompletedProcess[str]:
    repo = write_repo(tmp_path / "repo", {"peach.yaml": yaml, **files}, good=False)
    result = load_definitions(repo)
    assert not result.errors, [str(p) for p in result.errors]
    script = tmp_path / "runner.py"
    script.write_text(runner_script(result.tasks[0]))
    workdir = tmp_path / "work"
    workdir.mkdir()
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=workdir, check=False
    )


def task_yaml(method: str, notebook_path: str = "nb/t.ipynb", extra: str = "") -> str:
    return (
        f"codops: chrts\ntasks:\n  t:\n    notebook: {notebook_path}\n    method: {method}\n"
        f"    executor: python\n{extra}"
    )


def test_full_notebook_runs_all_cells_in_order_with_args(tmp_path: Path) -> None:
    proc = run_task(
        tmp_path,
        task_yaml("train", extra="    full_notebook: true\n    args: {radius: 2}\n"),
        {"nb/t.ipynb": notebook(HELPERS, "%%bash\necho never\n", TRAIN, markdown_first=True)},
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "area=12.57\n", "")


def test_only_the_defining_cell_runs_by_default(tmp_path: Path) -> None:
    # The helper in cell 1 is not part of the task's code: the run would end in a NameError, so the
    # definitions refuse it up front (tests/spec/test_cross_cell.py), and a self-contained cell runs alone.
    repo = write_repo(
        tmp_path / "repo", {"peach.yaml": task_yaml("train"), "nb/t.ipynb": notebook(HELPERS, TRAIN)}
    )
    assert [p.message for p in load_definitions(repo).errors] == [
        "'area' is defined in cell 1, which does not run without full_notebook: true"
    ]
    alone = "import math\ndef train():\n    print(math.tau)\n"
    proc = run_task(
        tmp_path / "alone", task_yaml("train"), {"nb/t.ipynb": notebook("import os\nmath = os", alone)}
    )
    assert (proc.returncode, proc.stdout) == (0, "6.283185307179586\n")


def test_failing_entry_function_exits_non_zero_with_its_traceback(tmp_path: Path) -> None:
    cell = "def train():\n    rows = []\n    raise ValueError(f'no rows: {rows}')\n"
    proc = run_task(tmp_path, task_yaml("train"), {"nb/t.ipynb": notebook("x = 1", cell)})

    assert proc.returncode == 1
    assert 'File "nb/t.ipynb[cell 2]", line 3, in train' in proc.stderr
    assert "raise ValueError(f'no rows: {rows}')" in proc.stderr  # the source line is shown
    assert proc.stderr.rstrip().endswith("ValueError: no rows: []")


def test_plain_python_file_runs_as_it_is(tmp_path: Path) -> None:
    code = "import sys\nGREETING = 'hi'\n\nasync def main(who):\n    print(GREETING, who, file=sys.stderr)\n"
    proc = run_task(tmp_path, task_yaml("main", "src/job.py", "    args: {who: you}\n"), {"src/job.py": code})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "hi you\n")


def test_task_exit_status_is_kept(tmp_path: Path) -> None:
    proc = run_task(
        tmp_path,
        task_yaml("main", "src/job.py"),
        {"src/job.py": "import sys\ndef main():\n    sys.exit(3)\n"},
    )
    assert proc.returncode == 3


def test_spark_parameter_is_left_alone_by_the_python_executor(tmp_path: Path) -> None:
    code = "def main(spark=None):\n    print('spark is', spark)\n"
    proc = run_task(tmp_path, task_yaml("main", "src/job.py"), {"src/job.py": code})
    assert (proc.returncode, proc.stdout) == (0, "spark is None\n")


def test_entry_point_bound_by_assignment_is_called(tmp_path: Path) -> None:
    code = "def _impl(n=2):\n    print('n =', n)\n\nmain = _impl\n"
    proc = run_task(tmp_path, task_yaml("main", "src/job.py"), {"src/job.py": code})
    assert (proc.returncode, proc.stdout) == (0, "n = 2\n")


def test_entry_point_that_is_not_callable_is_a_clear_failure(tmp_path: Path) -> None:
    proc = run_task(tmp_path, task_yaml("main", "src/job.py"), {"src/job.py": "main = 42\n"})
    assert proc.returncode == 1
    assert "peach: 'main' is not a callable in the task code" in proc.stderr


def test_shell_escapes_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cell = f"!touch {marker}\n%system touch {marker}\ndef train():\n    print('ran')\n"
    proc = run_task(tmp_path, task_yaml("train"), {"nb/t.ipynb": notebook(cell)})
    assert (proc.returncode, proc.stdout) == (0, "ran\n")
    assert not marker.exists()


def test_without_an_artifacts_directory_the_parameter_is_a_scratch_directory_and_it_says_so(
    tmp_path: Path,
) -> None:
    code = "def main(artifacts):\n    (artifacts / 'x.txt').write_text('x')\n    print(artifacts.is_dir())\n"
    proc = run_task(tmp_path, task_yaml("main", "t.py"), {"t.py": code})  # as in YARN cluster mode
    assert (proc.returncode, proc.stdout) == (0, "True\n")
    assert "artifacts are not kept for this run (YARN cluster mode)" in proc.stderr
