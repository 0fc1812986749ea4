import pytest

from scheduler.yamlfile import YamlError, load_bytes


def test_lines_of_keys_and_nested_values() -> None:
    doc = load_bytes(b"codops: chrts\ntasks:\n  a:\n    args: {x: 1}\n    dependencies:\n      - numpy\n")
    assert doc.data == {"codops": "chrts", "tasks": {"a": {"args": {"x": 1}, "dependencies": ["numpy"]}}}
    assert doc.line_of(("tasks", "a", "args", "x")) == 4
    assert doc.line_of(("tasks", "a", "dependencies", 0)) == 6
    assert doc.line_of(("tasks", "a", "no", "such", "key")) == 3  # nearest ancestor


def test_yaml_1_1_boolean_words_as_keys_are_the_words() -> None:
    """``notify: {on: [failed]}`` (SPEC §7): a plain ``on`` key is the word, a value stays a boolean."""
    assert load_bytes(b"notify:\n  on: [failed]\n  yes: on\n").data == {
        "notify": {"on": ["failed"], "yes": True}
    }


@pytest.mark.parametrize(
    ("raw", "line", "message"),
    [
        (b"a: &a [*a]\n", 1, "nested more than 64 levels deep"),
        (b"x: " + b"[" * 200 + b"]" * 200 + b"\n", 1, "nested more than 64 levels deep"),
        (b"codops: x\ncodops: y\n", 2, "duplicate key 'codops' (first defined on line 1)"),
        (
            b"a: !!python/object:os.system {}\n",
            1,
            "unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'",
        ),
        (b"a: !!python/name:os.system ''\n", 1, "bad value"),
        (b"? [a, b]\n: 1\n", 1, "keys must be strings, got ['a', 'b'] (quote it)"),
    ],
)
def test_hostile_documents(raw: bytes, line: int, message: str) -> None:
    with pytest.raises(YamlError) as info:
        load_bytes(raw)
    assert info.value.line == line
    assert info.value.message.startswith(message)
