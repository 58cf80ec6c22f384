"""Every YAML file raypose reads (training configs, search spaces, a run's saved config), read one way.

PyYAML's ``safe_load`` keeps the last of two equal keys, so a second ``optim:`` section silently
replaces the first; it raises ``UnicodeDecodeError`` on a Latin-1 byte and ``RecursionError`` on
deep nesting. :func:`load_yaml` refuses each of these with an :class:`~raypose.errors.InputError`
that names the file, the line (and key) and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from raypose.errors import InputError

# raypose's files nest a handful of levels; PyYAML's composer recurses once per level and hits
# Python's recursion limit near 300
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting deeper than :data:`MAX_DEPTH` and integers too
    long for Python to convert, naming the file and line."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self.source = source
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise InputError(
                    f"{self.source}, line {line}: nested more than {MAX_DEPTH} levels deep; "
                    "a raypose YAML file nests a few mappings: check the file is the one you meant"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError as e:  # Python refuses to convert integers of more than 4300 digits
            raise InputError(
                f"{self.source}, line {node.start_mark.line + 1}: the number cannot be read ({e})"
            ) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def load_yaml(path: str | os.PathLike) -> Any:
    """The document in a YAML file (``None`` for an empty file).

    Raises:
        InputError: the file is missing, binary, not UTF-8, not valid YAML, nested too deeply,
            or repeats a key in a mapping (naming the key path and both lines).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found" + (" (it is a folder)" if path.is_dir() else ""))
    return parse_yaml(path.read_bytes(), str(path))


def load_yaml_mapping(path: str | os.PathLike, what: str = "YAML file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (``{}`` for an empty file).

    Raises:
        InputError: as :func:`load_yaml`, or the top level is a list, string or number.
    """
    data = load_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: the top level of a {what} must be a mapping of keys to values (`key: value` "
            f"lines), not {describe_type(data)}"
        )
    return data


def parse_yaml(data: bytes, source: str) -> Any:
    """The document in ``data``, the bytes of the file ``source`` (named in errors)."""
    text = decode_utf8(data, source)
    try:
        loader = _StrictLoader(text, source)
    except yaml.reader.ReaderError as e:  # a control character: PyYAML checks the whole text first
        line = text.count("\n", 0, e.position) + 1
        raise InputError(
            f"{source}, line {line}: not valid YAML: character {e.character:#04x} is not allowed in "
            'YAML text; delete it (or quote it as an escape such as "\\t")'
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_unique_keys(loader, node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise InputError(f"{source}{_where(e)}: not valid YAML: {_problem(e)}") from None
    finally:
        loader.dispose()


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as text (a UTF-8 byte order mark is dropped).

    Raises:
        InputError: a NUL byte (a binary file such as a checkpoint) or bytes that are not UTF-8.
    """
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(
            f"{source}: not a text file (byte {nul} is NUL): give the YAML file, not a binary "
            "one such as a checkpoint"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{source}, line {line}: not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}, "
            "perhaps Latin-1 or another encoding): save the file as UTF-8"
        ) from None


def check_unique_keys(loader: yaml.SafeLoader, root: Node, source: str) -> None:
    """Refuse a mapping that holds a key twice, anywhere under ``root`` (``<<`` merges excepted:
    keys written beside a merge override the merged ones, as YAML intends).

    Raises:
        InputError: naming the key path (``optim.lr``, ``search.model.freeze[1].when``) and both lines.
    """
    stack: list[tuple[Node, str]] = [(root, "")]
    seen_nodes: set[int] = set()  # an alias repeats a node: check it once
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((child, f"{prefix}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    stack.append((value_node, prefix))
                    continue
                key = (
                    loader.construct_object(key_node, deep=True) if isinstance(key_node, ScalarNode) else None
                )
                path = f"{prefix}{'.' if prefix else ''}{key}"
                line = key_node.start_mark.line + 1
                if key is not None and key in first_line:
                    lines = (
                        f"on line {first_line[key]} and line {line}"
                        if first_line[key] != line
                        else f"on line {line}"
                    )
                    raise InputError(
                        f"{source}: key {path!r} is given twice, {lines}; YAML would silently keep the "
                        f"second alone: merge the two into one {path!r} (or delete one)"
                    )
                if key is not None:
                    first_line[key] = line
                stack.append((value_node, path))


def describe_type(value: Any) -> str:
    """``a list``, ``a string``, ``a number``... for messages about a value of the wrong shape."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__}"


def _where(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [error.context, error.problem]
        if (
            error.context_mark is not None
            and error.problem_mark is not None
            and error.context_mark.line != error.problem_mark.line
        ):
            parts[0] = f"{error.context} (line {error.context_mark.line + 1})" if error.context else None
        return ", ".join(p for p in parts if p) or "syntax error"
    return str(error)
