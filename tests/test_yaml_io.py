"""The one YAML loader: duplicate keys, encodings, binary files, nesting and syntax errors are
refused with the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypose.errors import InputError
from raypose.yaml_io import MAX_DEPTH, load_yaml, load_yaml_mapping


def write(tmp_path: Path, data: bytes | str, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(InputError) as err:
        load_yaml(path)
    assert str(path) in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("a: 1\nb: 2\na: 3\n", "'a'", "on line 1 and line 3"),
        ("a:\n  b:\n    c: 1\n    c: 2\n", "'a.b.c'", "on line 3 and line 4"),
        ("a:\n  - {x: 1}\n  - {x: 1, y: 2, x: 3}\n", "'a[1].x'", "on line 3"),
        ("yes: 1\ntrue: 2\n", "'True'", "on line 1 and line 2"),  # both are the boolean true in YAML 1.1
        (
            "search:\n  optim.lr: {choice: [1]}\n  optim.lr: {choice: [2]}\n",
            "'search.optim.lr'",
            "on line 2 and line 3",
        ),
    ],
)
def test_a_key_given_twice_is_refused_with_its_path_and_lines(tmp_path, text, key, lines):
    message = refusal(write(tmp_path, text))
    assert f"key {key} is given twice, {lines}" in message and "merge the two" in message


def test_merge_keys_and_aliases_are_not_duplicates(tmp_path):
    text = "defaults: &d {lr: 0.1, name: sgd}\nrun:\n  <<: *d\n  lr: 0.2\nother: *d\n"
    assert load_yaml(write(tmp_path, text)) == {
        "defaults": {"lr": 0.1, "name": "sgd"},
        "run": {"lr": 0.2, "name": "sgd"},
        "other": {"lr": 0.1, "name": "sgd"},
    }


def test_latin1_bytes_name_the_line_and_byte(tmp_path):
    message = refusal(write(tmp_path, "a: 1\nb: 2\n# caf\xe9\n".encode("latin-1")))
    assert "line 3" in message and "byte 15 is 0xe9" in message and "save the file as UTF-8" in message


def test_a_binary_file_is_not_read_as_yaml(tmp_path):
    message = refusal(write(tmp_path, b"PK\x03\x04\x00\x00" + bytes(range(256)), name="model.pth"))
    assert "not a text file" in message and "byte 4" in message


def test_a_utf8_byte_order_mark_and_utf8_text_are_read(tmp_path):
    assert load_yaml(write(tmp_path, "\ufeffname: caf\xe9\n".encode())) == {"name": "caf\xe9"}


def test_a_syntax_error_names_line_and_column_not_pyyaml_internals(tmp_path):
    message = refusal(write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n"))
    assert "not valid YAML" in message and "line 3, column 2" in message and "(line 2)" in message
    assert "<unicode string>" not in message


def test_a_control_character_names_its_line(tmp_path):
    message = refusal(write(tmp_path, "a: 1\nb: x\x07y\n"))
    assert "line 2" in message and "0x07" in message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 2000, 100_000])
def test_deep_nesting_is_refused_before_python_recursion_fails(tmp_path, depth):
    message = refusal(write(tmp_path, "[" * depth + "]" * depth))
    assert f"nested more than {MAX_DEPTH} levels" in message


def test_nesting_up_to_the_limit_is_read(tmp_path):
    depth = MAX_DEPTH - 1
    value = load_yaml(write(tmp_path, "[" * depth + "]" * depth))
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


def test_an_integer_too_long_to_convert_names_its_line(tmp_path):
    message = refusal(write(tmp_path, "a: 1\nb: " + "9" * 5000 + "\n"))
    assert "line 2" in message and "cannot be read" in message


def test_missing_files_and_folders(tmp_path):
    assert "file not found" in refusal(tmp_path / "nope.yaml")
    assert "it is a folder" in refusal(tmp_path)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- a\n- b\n", "a list"),
        ("just words\n", "a string ('just words')"),
        ("3.5\n", "a number (3.5)"),
        ("true\n", "a boolean (true)"),
    ],
)
def test_a_mapping_file_refuses_other_top_levels(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_yaml_mapping(path, "search space")
    assert str(path) in str(err.value) and "top level of a search space must be a mapping" in str(err.value)
    assert f"not {kind}" in str(err.value)


def test_an_empty_file_is_an_empty_mapping(tmp_path):
    assert load_yaml(write(tmp_path, "# nothing\n")) is None
    assert load_yaml_mapping(write(tmp_path, "")) == {}


def test_every_shipped_yaml_file_reads_without_a_repeated_key():
    # cluster/ files are read by Ray and KubeRay, not raypose: a repeated key would be dropped there too
    repo = Path(__file__).resolve().parents[1]
    files = [
        p
        for folder in ("configs", "search_spaces", "cluster")
        for p in sorted((repo / folder).glob("*.yaml"))
    ]
    assert len(files) >= 6
    for path in files:
        assert isinstance(load_yaml(path), dict), path
