"""Load and validate every task definition of one repository checkout.

One bad file or task never stops the others: every problem becomes a ``Problem`` naming the file and
line, and the valid tasks are still returned.
"""

import difflib
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from scheduler.errors import ExtractionError
from scheduler.limits import LoopLimits
from scheduler.names import METADATA_LOOP, codops_problem, task_name_problem
from scheduler.notifysettings import OrganisationNotifications
from scheduler.spec import requirements
from scheduler.spec.files import NotRegularFile, TooLarge, read_regular, shown
from scheduler.spec.notebooks import Extracted, MissingMethod, Source
from scheduler.spec.notifyspec import NOTIFY_KEYS
from scheduler.spec.taskspec import FILE_KEYS, TASK_KEYS, ExecutorKind, TaskDefinition
from scheduler.yamlfile import MAX_FILE_BYTES, Document, YamlError, load_bytes

ROOT_FILE = "peach.yaml"
CONF_DIR = "peach.conf"
RUNNER_PARAMETERS = frozenset({"spark", "artifacts"})  # filled in by the runner, never from ``args``


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


def describe(
    file: str, line: int | None, cell: int | None, task: str | None, severity: str, message: str
) -> str:
    """A problem as ``validate`` prints it: ``file:line: [warning: ][task 'x': ]message`` (a notebook's
    ``file: cell N, line L: ...``)."""
    if cell:
        where = f"{file}: cell {cell}" + (f", line {line}" if line else "")
    else:
        where = f"{file}:{line}" if line else file
    named = f"task {task!r}: " if task else ""
    label = "warning: " if severity == Severity.WARNING else ""
    return f"{where}: {label}{named}{message}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a repository; ``file`` is relative to the repository."""

    file: str
    line: int | None
    message: str
    task: str | None = None
    severity: Severity = Severity.ERROR
    cell: int | None = None

    def __str__(self) -> str:
        return describe(self.file, self.line, self.cell, self.task, self.severity, self.message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "cell": self.cell,
            "task": self.task,
            "severity": self.severity.value,
            "message": self.message,
        }


@dataclass(frozen=True)
class Task:
    """A validated task, with its extracted code and the full requirement set of its environment."""

    codops: str
    name: str
    definition: TaskDefinition
    file: str
    line: int
    requirements: tuple[str, ...]
    code: Extracted
    definition_text: str = ""  # the task's part of its YAML file, as committed (``task_excerpt``)

    @property
    def key(self) -> str:
        return f"{self.codops}/{self.name}"

    @property
    def loop(self) -> str:
        return self.definition.loop or self.codops

    @property
    def executor(self) -> ExecutorKind:
        return self.definition.executor


@dataclass(frozen=True)
class InvalidTask:
    """A task the definitions name but do not make runnable: listed as INVALID with its first error."""

    codops: str
    name: str
    loop: str
    executor: ExecutorKind
    file: str
    line: int
    problem: str  # ``file:line: message`` (or ``file: cell N, line L: message``)

    @property
    def key(self) -> str:
        return f"{self.codops}/{self.name}"


@dataclass(frozen=True)
class Definitions:
    """Everything one repository defines: the valid tasks, the invalid ones and every problem found."""

    tasks: tuple[Task, ...]
    problems: tuple[Problem, ...]
    files: tuple[str, ...]
    invalid: tuple[InvalidTask, ...] = ()

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)


class _Rejected(Exception):
    """Internal: stop handling one file or task; the problem is already recorded."""


@dataclass
class _Loader:
    root: Path
    allowed_codops: Collection[str] | None
    limits: LoopLimits
    problems: list[Problem] = field(default_factory=list)
    tasks: dict[tuple[str, str], Task] = field(default_factory=dict)
    codops_pins: dict[str, list[requirements.Pin]] = field(default_factory=dict)
    sources: dict[str, Source | ExtractionError] = field(default_factory=dict)
    blocks: dict[str, "TaskBlocks"] = field(default_factory=dict)  # definition file -> its task blocks
    secrets: Mapping[str, Collection[str]] | None = None  # codops -> its secret names; None: not checked
    invalid: dict[tuple[str, str], InvalidTask] = field(default_factory=dict)
    # codops -> what its operator allows notifications to do (None: not known here, not checked)
    notifications: Mapping[str, OrganisationNotifications] | None = None

    def problem(self, file: str, line: int | None, message: str, **extra: Any) -> None:
        """Record a problem; the file name is shown escaped and the message storable (no NUL)."""
        self.problems.append(Problem(shown(file), line, _storable(message), **extra))

    def load_file(self, relative: str) -> None:
        try:
            doc = self.read_yaml(relative)
        except _Rejected:
            return
        tasks = doc.data.get("tasks")
        seen = len(self.problems)
        try:
            codops, pins = self.file_header(relative, doc)
        except _Rejected:  # its tasks are named but none can load: each is INVALID with the file's error
            codops = doc.data.get("codops")
            if isinstance(tasks, dict) and isinstance(codops, str) and not codops_problem(codops):
                for name, body in tasks.items():
                    self.mark_invalid(relative, doc, codops, name, body, seen)
            return
        if not isinstance(tasks, dict) or not tasks:
            self.problem(
                relative, doc.line_of(("tasks",)), "'tasks' must be a non-empty mapping of task names"
            )
            return
        for name, body in tasks.items():
            seen = len(self.problems)
            try:
                self.load_task(relative, doc, codops, pins, name, body)
            except _Rejected:
                self.mark_invalid(relative, doc, codops, name, body, seen)

    def mark_invalid(
        self, relative: str, doc: Document, codops: str, name: Any, body: Any, seen: int
    ) -> None:
        """Keep a rejected task visible (state INVALID) with the first error recorded since ``seen``."""
        key = (codops, name)
        if task_name_problem(name) or key in self.tasks or key in self.invalid:
            return  # no usable name, or a valid definition of it wins (a duplicate is not the task)
        errors = [p for p in self.problems[seen:] if p.severity is Severity.ERROR]
        if not errors:
            return
        body = body if isinstance(body, dict) else {}
        loop = body.get("loop") if body.get("loop") in (codops, METADATA_LOOP) else codops
        executor = body.get("executor", ExecutorKind.SPARK.value)
        kind = ExecutorKind(executor) if executor in [k.value for k in ExecutorKind] else ExecutorKind.SPARK
        problem = str(replace(errors[0], task=None))
        self.invalid[key] = InvalidTask(
            codops, name, loop, kind, shown(relative), doc.line_of(("tasks", name)), problem
        )

    def read_yaml(self, relative: str) -> Document:
        path = self.root / relative
        if not _inside(self.root, path):
            self.problem(relative, None, "is a symbolic link leading outside the repository")
            raise _Rejected
        try:
            raw = read_regular(path, MAX_FILE_BYTES)
            doc = load_bytes(raw)
        except YamlError as exc:
            self.problem(relative, exc.line, exc.message)
            raise _Rejected from None
        except NotRegularFile:
            self.problem(relative, None, "is not a regular file (a FIFO, device or directory)")
            raise _Rejected from None
        except TooLarge as exc:
            self.problem(
                relative, None, f"file is {exc.size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit"
            )
            raise _Rejected from None
        except OSError as exc:
            self.problem(relative, None, f"cannot be read: {exc.strerror}")
            raise _Rejected from None
        if not isinstance(doc.data, dict):
            self.problem(relative, 1, "must be a mapping with 'codops' and 'tasks'")
            raise _Rejected
        self.blocks[relative] = TaskBlocks.of(raw.decode("utf-8"), doc)  # load_bytes checked it is UTF-8
        for key in doc.data:
            if key not in FILE_KEYS:
                self.problem(relative, doc.line_of((key,)), _unknown_key(key, FILE_KEYS, "file"))
        return doc

    def file_header(self, relative: str, doc: Document) -> tuple[str, list[requirements.Pin]]:
        codops = doc.data.get("codops")
        line = doc.line_of(("codops",))
        if codops is None:
            self.problem(relative, 1, "missing required key 'codops'")
            raise _Rejected
        why = codops_problem(codops)
        if why:
            self.problem(relative, line, why)
            raise _Rejected
        if self.allowed_codops is not None and codops not in self.allowed_codops:
            allowed = ", ".join(sorted(self.allowed_codops)) or "none"
            self.problem(
                relative,
                line,
                f"this repository may not schedule tasks for codops {codops!r} (allowed: {allowed})",
            )
            raise _Rejected
        deps = doc.data.get("dependencies", [])
        pins = self.pins(relative, doc, ("dependencies",), deps)
        known = self.codops_pins.setdefault(codops, [])
        for pin in pins:
            why = requirements.conflict(pin, known)
            if why:
                self.problem(
                    relative,
                    int(pin.origin.rsplit(":", 1)[1]),
                    f"{why}; the tasks of this file are not loaded",
                )
                raise _Rejected
        known.extend(pin for pin in pins if pin not in known)
        return codops, pins

    def pins(
        self, relative: str, doc: Document, path: tuple[str | int, ...], deps: Any, task: str | None = None
    ) -> list[requirements.Pin]:
        line = doc.line_of(path)
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            self.problem(relative, line, f"{path[-1]!s} must be a list of requirement strings", task=task)
            raise _Rejected
        result = []
        for i, text in enumerate(deps):
            try:
                result.append(
                    requirements.Pin(requirements.parse(text), f"{relative}:{doc.line_of((*path, i))}")
                )
            except ValueError as exc:
                self.problem(relative, doc.line_of((*path, i)), str(exc), task=task)
                raise _Rejected from None
        return result

    def load_task(
        self, relative: str, doc: Document, codops: str, shared: list[requirements.Pin], name: Any, body: Any
    ) -> None:
        base = ("tasks", name)
        line = doc.line_of(base)

        def reject(message: str, at: tuple[str | int, ...] = ()) -> _Rejected:
            self.problem(relative, doc.line_of((*base, *at)) if at else line, message, task=str(name))
            return _Rejected()

        why = task_name_problem(name)
        if why:
            raise reject(why)
        if not isinstance(body, dict):
            raise reject("must be a mapping with at least 'notebook' and 'method'")
        try:
            spec = TaskDefinition.model_validate(body)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                self.problem(relative, doc.line_of((*base, *loc)), _pydantic_message(error), task=name)
            raise _Rejected from None
        first = self.tasks.get((codops, name))
        if first is not None:
            raise reject(f"task {codops}/{name} is already defined in {first.file}:{first.line}")
        self.check_loop_and_timeout(spec, codops, reject)
        self.check_secrets(spec, codops, reject)
        self.check_webhook(spec, codops, relative, doc.line_of((*base, "notify", "webhook")), name)
        own = self.pins(relative, doc, (*base, "dependencies"), list(spec.dependencies), task=name)
        for i, pin in enumerate(own):
            why = requirements.conflict(pin, self.codops_pins.get(codops, []) + own[:i])
            if why:
                raise reject(why, ("dependencies", i))
        code = self.extract(relative, doc, base, name, spec)
        self.check_signature(spec, code, reject)
        everything = {
            requirements.normalise(p.requirement) for p in [*self.codops_pins.get(codops, []), *own]
        }
        excerpt = self.blocks[relative].excerpt(name)
        self.tasks[(codops, name)] = Task(
            codops, name, spec, shown(relative), line, tuple(sorted(everything)), code, excerpt
        )

    def check_loop_and_timeout(self, spec: TaskDefinition, codops: str, reject: Any) -> None:
        loop = spec.loop or codops
        if loop not in (codops, METADATA_LOOP):
            raise reject(
                f"loop must be {codops!r} (the default) or {METADATA_LOOP!r}, not {loop!r}", ("loop",)
            )
        limit = self.limits.of_loop(loop)
        if spec.timeout is not None and spec.timeout > limit:
            raise reject(
                f"timeout {spec.timeout:g}s is above the {loop} loop's limit of {limit:g}s", ("timeout",)
            )

    def check_secrets(self, spec: TaskDefinition, codops: str, reject: Any) -> None:
        if self.secrets is None or spec.secrets is None:
            return
        known = self.secrets.get(codops, ())
        for i, name in enumerate(spec.secrets):
            if name not in known:
                offered = ", ".join(sorted(known)) or "none"
                raise reject(
                    f"secrets: organisation {codops!r} has no secret {name!r} (it has: {offered})",
                    ("secrets", i),
                )

    def check_webhook(self, spec: TaskDefinition, codops: str, relative: str, line: int, name: str) -> None:
        """A webhook host the organisation does not allow is a warning: the task runs, its webhook is not
        called (``scheduler.notify`` refuses it when due)."""
        url = spec.notify.webhook if spec.notify else None
        if url is None or self.notifications is None:
            return
        allowed = self.notifications.get(codops, OrganisationNotifications())
        host = urlsplit(url).hostname or ""
        if not allowed.allows(host):
            hosts = ", ".join(allowed.webhook_hosts) or "none"
            message = (
                f"notify.webhook: host {host!r} is not allowed for {codops} (webhook_hosts: {hosts}); "
                "it will not be called"
            )
            self.problem(relative, line, message, task=name, severity=Severity.WARNING)

    def extract(
        self, relative: str, doc: Document, base: tuple[Any, ...], name: str, spec: TaskDefinition
    ) -> Extracted:
        at = doc.line_of((*base, "notebook"))
        where = _notebook_problem(self.root, spec.notebook)
        if where:
            self.problem(relative, at, f"notebook: {where}", task=name)
            raise _Rejected
        notebook = PurePosixPath(spec.notebook).as_posix()
        source = self.sources.get(notebook)
        if source is None:
            try:
                source = Source.read(self.root, notebook)
            except ExtractionError as exc:
                source = exc
            except OSError as exc:
                source = ExtractionError(f"cannot be read: {exc.strerror}", notebook)
            self.sources[notebook] = source
        try:
            if isinstance(source, ExtractionError):
                raise source
            code = source.extract(spec.method, spec.full_notebook)
        except MissingMethod as exc:  # the typo is in the YAML's method key
            method_line = doc.line_of((*base, "method"))
            self.problem(relative, method_line, f"{exc.message} of {notebook}", task=name)
            raise _Rejected from None
        except ExtractionError as exc:
            self.problem(exc.path or notebook, exc.line, exc.message, task=name, cell=exc.cell)
            raise _Rejected from None
        for note in code.warnings:
            self.problem(
                notebook, note.line, note.message, task=name, severity=Severity.WARNING, cell=note.cell
            )
        for note in code.errors:
            self.problem(notebook, note.line, note.message, task=name, cell=note.cell)
        if code.errors:
            raise _Rejected
        return code

    def check_signature(self, spec: TaskDefinition, code: Extracted, reject: Any) -> None:
        signature = code.signature
        if signature is None:
            return
        for key in spec.args:
            if key in RUNNER_PARAMETERS:
                raise reject(
                    f"{key!r} is supplied by the scheduler and cannot be given in args", ("args", key)
                )
            if key not in signature.parameters and not signature.var_keyword:
                raise reject(f"method {spec.method!r} has no parameter {key!r}", ("args", key))
        for param in signature.required:
            if param == "artifacts" or (param == "spark" and spec.executor is ExecutorKind.SPARK):
                continue
            if param not in spec.args:
                extra = " (only the spark executor provides it)" if param == "spark" else ""
                raise reject(f"method {spec.method!r} needs argument {param!r}: give it under args{extra}")


def load_definitions(
    root: Path,
    allowed_codops: Collection[str] | None = None,
    limits: LoopLimits | None = None,
    secrets: Mapping[str, Collection[str]] | None = None,
    notifications: Mapping[str, OrganisationNotifications] | None = None,
) -> Definitions:
    """Read ``peach.yaml`` and ``peach.conf/*.yaml`` under ``root``; never raises on bad content.
    ``secrets`` gives each codops' secret names, which a task's ``secrets:`` may ask for (None: any);
    ``notifications``: per codops, the operator's notification settings (webhook hosts are checked)."""
    root = Path(root)
    loader = _Loader(
        root.resolve(), allowed_codops, limits or LoopLimits(), secrets=secrets, notifications=notifications
    )
    files = list(_definition_files(loader.root, loader))
    if not files and not loader.problems:
        loader.problem(ROOT_FILE, None, f"no task definitions: expected {ROOT_FILE} or {CONF_DIR}/*.yaml")
    for relative in files:
        loader.load_file(relative)
    invalid = tuple(t for key, t in loader.invalid.items() if key not in loader.tasks)
    return Definitions(
        tuple(loader.tasks.values()), tuple(loader.problems), tuple(map(shown, files)), invalid
    )


@dataclass(frozen=True)
class TaskBlocks:
    """A definition file's lines, each with the tasks whose block holds it (a block runs from the task's
    key to the next task or top-level key). Worked out once per file, then cut per task."""

    text: str
    lines: tuple[tuple[str, frozenset[str]], ...] | None  # None: the file has no ``tasks`` mapping

    @classmethod
    def of(cls, text: str, doc: Document) -> "TaskBlocks":
        tasks = doc.data.get("tasks") if isinstance(doc.data, dict) else None
        if not isinstance(tasks, dict):
            return cls(text, None)
        lines = text.splitlines(keepends=True)
        starts = sorted(
            {doc.line_of((key,)) for key in doc.data} | {doc.line_of(("tasks", t)) for t in tasks}
        )
        ends = dict(zip(starts, [*starts[1:], len(lines) + 1], strict=True))
        owners: list[set[str]] = [set() for _ in range(len(lines) + 2)]
        for task in tasks:
            start = doc.line_of(("tasks", task))
            for number in range(start, ends[start]):
                owners[number].add(task)
        return cls(text, tuple((line, frozenset(owners[n])) for n, line in enumerate(lines, 1)))

    def excerpt(self, name: str) -> str:
        """The lines that define task ``name``: the file without the other tasks' blocks (its header,
        shared dependencies and comments stay), so that comparing two commits' excerpts shows only what
        changed for this task."""
        if self.lines is None or not any(name in owners for _, owners in self.lines):
            return self.text
        return "".join(line for line, owners in self.lines if not owners or name in owners)


def _definition_files(root: Path, loader: _Loader) -> Iterator[str]:
    if os.path.lexists(root / ROOT_FILE):  # whatever it is: reported if it cannot be read
        yield ROOT_FILE
    conf = root / CONF_DIR
    if conf.is_symlink() and not _inside(root, conf):
        loader.problem(CONF_DIR, None, "is a symbolic link leading outside the repository")
        return
    if conf.is_dir():
        for path in sorted(conf.iterdir()):
            if path.suffix in (".yaml", ".yml"):
                yield f"{CONF_DIR}/{path.name}"


def _inside(root: Path, path: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root)


def _notebook_problem(root: Path, notebook: str) -> str | None:
    """Why ``notebook`` cannot be used as a task's code file, or None."""
    pure = PurePosixPath(notebook)
    if not notebook or "\\" in notebook or "\0" in notebook:
        return f"{notebook!r} is not a repository path"
    if pure.is_absolute():
        return f"{notebook!r} is absolute; give a path relative to the repository root"
    if ".." in pure.parts:
        return f"{notebook!r} leaves the repository ('..' is not allowed)"
    if pure.suffix not in (".ipynb", ".py"):
        return f"{notebook!r} must be a .ipynb notebook or a .py file"
    path = root / pure
    if not _inside(root, path):
        return f"{notebook!r} is a symbolic link leading outside the repository"
    if not path.is_file():
        return f"{notebook!r} does not exist in the repository"
    return None


def _storable(message: str) -> str:
    """``message`` without what a database or terminal refuses (NUL, lone surrogates)."""
    return message.replace("\0", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


def _unknown_key(key: str, known: tuple[str, ...], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
    return f"unknown {where} key {key!r}{hint}"


def _pydantic_message(error: Any) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 2 and error["loc"][0] == "notify":
        return _unknown_key(str(error["loc"][-1]), NOTIFY_KEYS, "notify")
    if error["type"] == "extra_forbidden":
        return _unknown_key(str(error["loc"][-1]), TASK_KEYS, "task")
    if error["type"] == "missing":
        return f"missing required key {loc!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}"
