"""Task code from notebooks and scripts: read cells, neutralise IPython syntax, find the entry function.

Nothing here executes task code or magics: cells are parsed with ``ast`` only.
"""

import ast
import builtins
import json
import re
import symtable
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.errors import ExtractionError
from scheduler.spec.files import NotRegularFile, TooLarge, read_regular

MAX_SOURCE_BYTES = 64 * 1024 * 1024  # notebooks carry their outputs (images), so this is generous
# Cell magics whose body is still Python: the magic line is dropped, the body kept.
PYTHON_BODY_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})
# Line magics that wrap a Python statement: the statement is kept.
STATEMENT_LINE_MAGICS = frozenset({"time", "timeit", "prun"})
INSTALL_MAGICS = frozenset({"pip", "conda", "mamba"})

_LINE_MAGIC = re.compile(r"^(?P<indent>\s*)(?P<sigil>%%?|!!?)(?P<name>[\w.-]*)(?P<rest>.*)$")
_ASSIGN_MAGIC = re.compile(r"^\s*[\w.,\s\[\]()]+?\s*=\s*[%!]")
_HELP = re.compile(r"^\s*(\?\??[\w.]+|[\w.]+\?\??)\s*$")

# CPython 3.11 keeps the AST constructor's recursion depth in state shared by every thread: a thread
# that parses while another is in the middle of its conversion (resumed there by the GIL, e.g. during
# a garbage collection) makes that one fail with "SystemError: AST constructor recursion depth
# mismatch". Hundreds of loops load definitions at once (bench/service_load.py hit it), so every parse
# takes its turn.
_PARSING = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse``, one thread at a time."""
    with _PARSING:
        return ast.parse(source, filename=filename)


class MissingMethod(ExtractionError):
    """No cell defines the entry function: the task's ``method`` key is what is wrong."""


@dataclass(frozen=True)
class Chunk:
    """One piece of Python to run, named so that tracebacks point at the notebook cell."""

    filename: str
    code: str


@dataclass(frozen=True)
class Signature:
    """What the runner and the validator need to know about the entry function's parameters."""

    parameters: tuple[str, ...]
    required: tuple[str, ...]
    var_keyword: bool


@dataclass(frozen=True)
class Note:
    """A warning about the task code: something was neutralised or ignored, not a reason to stop."""

    message: str
    cell: int | None = None
    line: int | None = None


@dataclass(frozen=True)
class Extracted:
    """The code a task runs, ready for a runner script."""

    chunks: tuple[Chunk, ...]
    origin: str
    signature: Signature | None
    warnings: tuple[Note, ...]
    errors: tuple[Note, ...] = ()  # the code cannot run as extracted (a name only another cell defines)


@dataclass
class _Cell:
    number: int | None  # 1-based position in the notebook, markdown cells included; None for a .py file
    raw: str
    code: str | None = None  # Python after neutralising IPython syntax; None when it is not Python
    tree: ast.Module | None = None
    error: ExtractionError | None = None
    notes: list[Note] = field(default_factory=list)


class Source:
    """A notebook or a ``.py`` file, parsed once and shared by every task that uses it."""

    def __init__(self, path: str, raw: bytes) -> None:
        self.path = path
        if len(raw) > MAX_SOURCE_BYTES:
            raise ExtractionError(
                f"file is {len(raw):,} bytes, over the {MAX_SOURCE_BYTES:,}-byte limit", path
            )
        text = _decode(path, raw)
        self.is_notebook = path.endswith(".ipynb")
        if self.is_notebook:
            self.cells = [_Cell(n, src) for n, src in _notebook_cells(path, text)]
        else:
            self.cells = [_Cell(None, text)]
        for cell in self.cells:
            self._parse(cell)
        self._scope_cache: dict[int, tuple[set[str], set[str]] | None] = {}  # id(cell) -> _scopes

    @classmethod
    def read(cls, root: Path, relative: str) -> "Source":
        try:
            raw = read_regular(root / relative, MAX_SOURCE_BYTES)
        except NotRegularFile:
            raise ExtractionError("is not a regular file (a FIFO, device or directory)", relative) from None
        except TooLarge as exc:
            raise ExtractionError(
                f"file is {exc.size:,} bytes, over the {MAX_SOURCE_BYTES:,}-byte limit", relative
            ) from None
        return cls(relative, raw)

    def _where(self, cell: _Cell) -> str:
        return f"{self.path}, cell {cell.number}" if cell.number else self.path

    def _parse(self, cell: _Cell) -> None:
        cell.code = cell.raw
        error = self._try_parse(cell)
        if error is None or cell.number is None:  # parsed, or a .py file: plain Python, nothing to neutralise
            cell.error = error
            return
        try:
            cell.code, notes = _neutralise(cell.raw)
        except ExtractionError as exc:
            cell.error = ExtractionError(exc.message, self.path, cell.number, exc.line)
            return
        cell.notes = [Note(message, cell.number, line) for line, message in notes]
        if cell.code is not None:
            cell.error = self._try_parse(cell)

    def _try_parse(self, cell: _Cell) -> ExtractionError | None:
        try:
            cell.tree = parse(cell.code or "", filename=self.chunk_name(cell.number))
        except SyntaxError as exc:
            return ExtractionError(f"syntax error: {exc.msg}", self.path, cell.number, exc.lineno)
        except (RecursionError, MemoryError, ValueError) as exc:
            return ExtractionError(f"cannot be parsed: {exc or type(exc).__name__}", self.path, cell.number)
        return None

    def chunk_name(self, number: int | None) -> str:
        return f"{self.path}[cell {number}]" if number else self.path

    def extract(self, method: str, full_notebook: bool) -> Extracted:
        """The code to run for ``method``; raise ExtractionError when it is missing or broken."""
        definitions = [
            (cell, node) for cell in self.cells if cell.tree for node in _top_level(cell.tree, method)
        ]
        broken = [(cell, cell.error) for cell in self.cells if cell.error]
        whole = full_notebook or not self.is_notebook
        if whole and broken:
            raise broken[0][1]
        for broken_cell, error in broken:
            if _mentions_def(broken_cell.raw, method):
                raise error
        if not definitions:
            raise self._missing(method)
        cell, node = definitions[-1]
        warnings: list[Note] = []
        if whole:
            used = self.cells
        else:
            used = [cell]
            warnings += [Note(f"{e.message} (cell not used by this task)", e.cell, e.line) for _, e in broken]
            numbers = sorted({c.number or 0 for c, _ in definitions})
            if len(numbers) > 1:
                listed = ", ".join(map(str, numbers))
                warnings.append(Note(f"{method!r} is defined in cells {listed}; using cell {cell.number}"))
        errors: list[Note] = []
        if not whole:
            errors, undefined = self._cross_cell(cell)
            warnings += undefined
        warnings = [note for c in used for note in c.notes] + warnings
        chunks = tuple(Chunk(self.chunk_name(c.number), c.code or "") for c in used if c.tree)
        origin = self.path if whole else self._where(cell)
        return Extracted(chunks, origin, _signature(node), tuple(warnings), tuple(errors))

    def _cross_cell(self, entry: _Cell) -> tuple[list[Note], list[Note]]:
        """The single-cell trap: names the entry cell reads but does not bind, as (errors: another cell
        defines them, so they exist in the notebook but not when only this cell runs; warnings: no cell
        defines them, they may come from a runtime global). Nothing when the cell has a ``*`` import."""
        scopes = self._scopes_of(entry)
        if scopes is None:
            return [], []
        bound, read = scopes
        free = sorted(read - bound - _BUILTINS)
        if not free:
            return [], []
        defined_in: dict[str, int] = {}
        for other in self.cells:
            other_scopes = self._scopes_of(other) if other is not entry else None
            for name in other_scopes[0] if other_scopes else ():
                defined_in[name] = other.number or 0  # the last definition wins, as when run in order
        lines = _first_reads(entry.tree)
        errors, warnings = [], []
        for name in free:
            if name in defined_in:
                message = (
                    f"{name!r} is defined in cell {defined_in[name]}, "
                    "which does not run without full_notebook: true"
                )
                errors.append(Note(message, entry.number, lines.get(name)))
            else:
                message = f"{name!r} is not defined in this cell nor anywhere in the notebook"
                warnings.append(Note(message, entry.number, lines.get(name)))
        return errors, warnings

    def _scopes_of(self, cell: _Cell) -> tuple[set[str], set[str]] | None:
        """``_scopes(cell)``, worked out once per cell however many tasks the notebook has."""
        if id(cell) not in self._scope_cache:
            self._scope_cache[id(cell)] = _scopes(cell)
        return self._scope_cache[id(cell)]

    def _missing(self, method: str) -> ExtractionError:
        for cell in self.cells:
            for node in ast.walk(cell.tree) if cell.tree else ():
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and child.name == method:
                        owner = getattr(node, "name", "?")
                        return ExtractionError(
                            f"method {method!r} is only defined inside {owner!r}; define it at the top level",
                            self.path,
                            cell.number,
                            child.lineno,
                        )
        return MissingMethod(f"method {method!r} is not defined at the top level", self.path)


def _decode(path: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ExtractionError("not valid UTF-8", path, line=line) from None


def _notebook_cells(path: str, text: str) -> list[tuple[int, str]]:
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExtractionError(f"not a valid notebook (JSON): {exc.msg}", path, line=exc.lineno) from None
    except RecursionError:
        raise ExtractionError("not a valid notebook (JSON nested too deeply)", path) from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        version = notebook.get("nbformat") if isinstance(notebook, dict) else None
        hint = f" (nbformat {version}; save it with Jupyter 4 or later)" if version else ""
        raise ExtractionError(f"not a Jupyter notebook: no 'cells' list{hint}", path)
    cells = []
    for number, cell in enumerate(notebook["cells"], start=1):
        if not isinstance(cell, dict):
            raise ExtractionError("not a notebook cell", path, number)
        if cell.get("cell_type") == "code":
            cells.append((number, _cell_text(path, number, cell.get("source", ""))))
    return cells


def _cell_text(path: str, number: int, source: Any) -> str:
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(part, str) for part in source):
        return "".join(source)
    raise ExtractionError("'source' is not text", path, number)


def _neutralise(raw: str) -> tuple[str | None, list[tuple[int | None, str]]]:
    """Neutralise IPython syntax in a cell that does not parse: (code, or None if not Python; notes)."""
    lines = raw.splitlines()
    notes: list[tuple[int | None, str]] = []
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        name = (lines[first].strip()[2:].split() or [""])[0]
        if name not in PYTHON_BODY_CELL_MAGICS:
            return None, [(first + 1, f"%%{name} cell is not Python: skipped, never executed")]
        notes.append((first + 1, f"%%{name} removed, the cell body runs as plain Python"))
        lines[first] = _blank(lines[first])
    for i, line in enumerate(lines):
        line_no = i + 1
        if _is_python(line):
            continue
        shown = line.strip()
        if _ASSIGN_MAGIC.match(line):
            raise ExtractionError(
                f"{shown!r} assigns the output of an IPython magic or shell command; "
                "this cannot run as Python",
                line=line_no,
            )
        if _HELP.match(line):
            notes.append((line_no, f"help syntax {shown!r} removed"))
            lines[i] = _blank(line)
            continue
        match = _LINE_MAGIC.match(line)
        if not match:
            continue
        indent, sigil, name, rest = match["indent"], match["sigil"], match["name"], match["rest"].strip()
        if sigil.startswith("%") and name == "run":
            raise ExtractionError(f"{shown!r}: %run is not supported; import the code instead", line=line_no)
        if sigil.startswith("%") and name in STATEMENT_LINE_MAGICS and rest:
            lines[i] = indent + rest
            notes.append((line_no, f"{sigil}{name} removed, the statement runs once without it"))
            continue
        kind = "shell command" if sigil.startswith("!") else "IPython magic"
        hint = ""
        if name in INSTALL_MAGICS or (sigil.startswith("!") and rest.startswith("install")):
            hint = "; declare packages under 'dependencies' in the task YAML instead"
        notes.append((line_no, f"{kind} {shown!r} removed, never executed{hint}"))
        lines[i] = _blank(line)
    return "\n".join(lines) + "\n", notes


def _blank(line: str) -> str:
    indent = line[: len(line) - len(line.lstrip())]
    return f"{indent}pass  # peach: removed IPython syntax"


def _is_python(text: str) -> bool:
    """True when ``text`` parses as Python (``x = a % b`` is not a magic)."""
    try:
        parse(text.strip() if "\n" not in text.strip() else text)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def _mentions_def(raw: str, method: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(method)}\b", raw, re.MULTILINE) is not None


def _top_level(tree: ast.Module, method: str) -> list[ast.stmt]:
    def binds(node: ast.stmt) -> bool:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node.name == method
        if isinstance(node, ast.Assign):
            return any(isinstance(t, ast.Name) and t.id == method for t in node.targets)
        if isinstance(node, ast.AnnAssign):
            return isinstance(node.target, ast.Name) and node.target.id == method
        if isinstance(node, ast.Import | ast.ImportFrom):
            return any((alias.asname or alias.name.split(".")[0]) == method for alias in node.names)
        return False

    return [node for node in tree.body if binds(node)]


_BUILTINS = frozenset(dir(builtins))


def _scopes(cell: _Cell) -> tuple[set[str], set[str]] | None:
    """(the names ``cell`` binds at module level, the names its code reads from module globals), from
    Python's own symbol tables: every binding form counts (``import``, ``def``, ``class``, ``for``,
    ``with``/``except ... as``, walrus, ``global`` then assignment), and parameters, comprehension
    variables and other local names are not reads of globals. None when the cell cannot tell (it does
    not parse, or has a ``*`` import)."""
    if cell.tree is None or any(
        isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)
        for node in ast.walk(cell.tree)
    ):
        return None
    try:
        with _PARSING:
            top = symtable.symtable(cell.code or "", "<cell>", "exec")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    bound: set[str] = set()
    read: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        module = table.get_type() == "module"
        for symbol in table.get_symbols():
            name = symbol.get_name()
            binds = symbol.is_assigned() or symbol.is_imported()
            if binds and (module or symbol.is_declared_global()):
                bound.add(name)
            if symbol.is_referenced() and (module or symbol.is_global()):
                read.add(name)
    return bound, read


def _first_reads(tree: ast.Module | None) -> dict[str, int]:
    """Each name's first line read in ``tree``."""
    lines: dict[str, int] = {}
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            lines[node.id] = min(lines.get(node.id, node.lineno), node.lineno)
    return lines


def _signature(node: ast.stmt) -> Signature | None:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None  # an assignment or an import: checked when it runs
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    with_default = {a.arg for a in positional[len(positional) - len(args.defaults) :]}
    required = [a.arg for a in positional if a.arg not in with_default]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None]
    names = [a.arg for a in args.args] + [a.arg for a in args.kwonlyargs]
    return Signature(tuple(names), tuple(required), args.kwarg is not None)
