"""File helpers: atomic writes, output-path checks, and JSON loading with errors that name the file."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from raypose.errors import ConfigError, InputError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash inside the block leaves ``path`` untouched (the old file, or none) and removes the
    temporary file, so nobody ever reads half a file where a whole one is expected. The file
    ends with the mode a plain ``open(path, "w")`` would give it: an overwritten file keeps its
    mode, a new one gets ``0o666`` less the umask (``mkstemp``'s private ``0o600`` would
    otherwise survive the rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _chmod_like_open(tmp_path, path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (not thread-safe)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` (``0o666``) or ``mkdir()`` (``0o777``) gives a new file or folder under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def _chmod_like_open(tmp_path: Path, path: Path) -> None:
    try:
        os.chmod(tmp_path, _mode_for(path))
    except OSError as e:  # some mounted file systems refuse chmod; the file itself is still good
        logger.debug("%s: cannot set the file mode (%s)", path, e)


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)  # overwriting: keep the file's mode, as open() does
    except FileNotFoundError:
        return default_mode()


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


def check_output_file(
    path: str | os.PathLike, option: str = "--out", inputs: tuple[str | os.PathLike | None, ...] = ()
) -> Path:
    """Check, before any work, that a file can be written at ``path``; return it as a Path.

    Raises:
        ConfigError: ``path`` is a folder, a parent of it is a file, the folder it would go in
            is not writable, or it is one of ``inputs`` (which must stay untouched).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; {option} names the file to write, e.g. {path / 'out.json'}")
    _check_parent_folders(path, option)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise ConfigError(
                f"{option} {path}: is also an input ({source}); raypose never overwrites its inputs: "
                "write to another file"
            )
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` is or can be made a writable folder; return it as a Path.

    Raises:
        ConfigError: ``path`` or a parent of it is a file, or it cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder; {option} names a folder to write into")
    if path.is_dir():
        _check_writable(path, path, option)
    else:
        _check_parent_folders(path, option)
    return path


def _check_parent_folders(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder; choose a path under a folder")
    _check_writable(parent, path, option)


def _check_writable(folder: Path, path: Path, option: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in {folder} (permission denied); choose another path")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.absolute().resolve() == b.absolute().resolve()


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 100, **savefig_kwargs: Any) -> Path:
    """Write a matplotlib figure as PNG to a temporary name, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **savefig_kwargs)
    return Path(path)
