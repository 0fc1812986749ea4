"""Safe YAML reading that remembers where every value came from.

PyYAML's safe composer builds the node graph; we turn it into plain data ourselves so that we can
refuse duplicate keys, bound alias expansion (billion-laughs documents), and keep the line of every
key and value for error messages.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from scheduler.errors import ConfigError

# libyaml's parser when PyYAML was built with it (10x faster); the composed nodes carry the same marks.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})

Path_ = tuple[str | int, ...]


class YamlError(ConfigError):
    """A YAML document could not be read; ``line`` is 1-based, or None when it applies to the file."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Document:
    """Plain data (dicts, lists, scalars) plus the line of each value, keyed by its path."""

    data: Any
    lines: Mapping[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """Line of the value at ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1


def load_bytes(raw: bytes) -> Document:
    """Parse one YAML document from bytes; raise YamlError naming the line on any problem."""
    if len(raw) > MAX_FILE_BYTES:
        raise YamlError(f"file is {len(raw):,} bytes, over the {MAX_FILE_BYTES:,}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})", line) from None
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise YamlError("file is empty", 1)
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(f"YAML syntax error: {problem}", mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"YAML error: {exc}") from None
    if len(nodes) != 1:
        line = nodes[1].start_mark.line + 1 if len(nodes) > 1 else 1
        raise YamlError("expected exactly one YAML document", line)
    return _Builder().build(nodes[0])


class _Builder:
    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.budget = MAX_NODES
        self.constructor = yaml.SafeLoader("")

    def build(self, root: yaml.Node) -> Document:
        return Document(self.value(root, ()), self.lines)

    def value(self, node: yaml.Node, path: Path_) -> Any:
        self.budget -= 1
        if self.budget < 0:
            # Report the top-level key being expanded: an aliased node's own mark points at its anchor.
            line = self.lines.get(path[:1], node.start_mark.line + 1)
            raise YamlError(f"document expands to more than {MAX_NODES:,} values (alias bomb?)", line)
        if len(path) > MAX_DEPTH:
            raise YamlError(f"nested more than {MAX_DEPTH} levels deep", node.start_mark.line + 1)
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_TAGS:
            raise YamlError(f"unsupported YAML tag {node.tag!r}", node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise YamlError(f"bad value: {exc}", node.start_mark.line + 1) from None

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlError("merge keys (<<) are not supported; repeat the values instead", line)
            key = self.value(key_node, (*path, "<key>"))
            if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode) and not key_node.style:
                key = key_node.value  # YAML 1.1 reads a plain on/yes/off as a boolean; as a key, the word
            if not isinstance(key, str):
                raise YamlError(f"keys must be strings, got {key!r} (quote it)", line)
            if key in result:
                first = self.lines[(*path, key)]
                raise YamlError(f"duplicate key {key!r} (first defined on line {first})", line)
            self.lines[(*path, key)] = line
            result[key] = self.value(value_node, (*path, key))
        self.lines.pop((*path, "<key>"), None)
        return result
