"""Helpers for executor and environment tests: tasks loaded from a real repository, tiny local wheels."""

import base64
import hashlib
import os
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import yaml

from executors.base import Execution, Outcome
from scheduler.spec.definitions import Task, load_definitions


def make_task(
    root: Path,
    code: str,
    *,
    method: str = "main",
    args: dict[str, object] | None = None,
    dependencies: Iterable[str] = (),
    name: str = "job",
) -> Task:
    """A python-executor task ``default/<name>`` whose code is ``code``, loaded with ``load_definitions``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tasks.py").write_text(code)
    spec: dict[str, object] = {"notebook": "tasks.py", "method": method, "executor": "python"}
    if args:
        spec["args"] = args
    document = {"codops": "default", "dependencies": list(dependencies), "tasks": {name: spec}}
    (root / "peach.yaml").write_text(yaml.safe_dump(document))
    definitions = load_definitions(root)
    assert not definitions.errors, definitions.errors
    (task,) = definitions.tasks
    return task


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def make_wheel(
    folder: Path, name: str, version: str, module: str, requires: Iterable[str] = (), script: str = ""
) -> Path:
    """Write a pure-python wheel holding ``module`` as ``<name>/__init__.py`` (and a console script)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": module,
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: peach-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    if script:
        files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{script}\n"
    record = [f"{path},{_record_hash(text.encode())},{len(text.encode())}" for path, text in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def marked_processes(run_id: str) -> list[int]:
    """Live, non-zombie processes carrying the run's marker: an independent scan of /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] in "ZX":
            continue
        if f"PEACH_RUN_ID={run_id}".encode() in environ.split(b"\0"):
            found.append(int(entry))
    return found


def no_survivors() -> Iterator[list[str]]:
    """For a fixture: the runs a test starts; after it, none of their processes may be alive (survivors
    are killed, then the test fails)."""
    runs: list[str] = []
    yield runs
    survivors = {run: marked_processes(run) for run in runs}
    for pids in survivors.values():
        for pid in pids:
            os.kill(pid, 9)  # only processes carrying our own run marker
    assert not any(survivors.values()), f"processes survived their run: {survivors}"


def alive(pid: int) -> bool:
    """True if ``pid`` is a live process that is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def finish(execution: Execution, limit: float = 60) -> Outcome:
    """Wait for a started run to end, at most ``limit`` seconds."""
    outcome = execution.wait(until=time.monotonic() + limit)
    assert outcome is not None, "run did not end in time"
    return outcome
