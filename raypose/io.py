"""File helpers: atomic writes and JSON loading with errors that name the file."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from raypose.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash inside the block leaves ``path`` untouched (the old file, or none) and removes the
    temporary file, so nobody ever reads half a file where a whole one is expected.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block (reference counting still frees).

    Parsing a large JSON file creates millions of lists, dicts and floats; the collector would walk
    them again and again (about half of orjson's time on a COCO-val results file) although none of
    them can be part of a cycle.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Load a JSON file.

    Raises:
        InputError: the file is missing or is not valid JSON; the message names the file and,
            for a syntax error, the line and column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        with paused_gc():
            return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # stdlib json: NaN/Infinity (then refused by the checks) and errors with line/column
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text JSON file ({e.reason})") from None
