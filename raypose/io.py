"""File helpers: atomic writes, output-path checks, and JSON loading with errors that name the file."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
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

from raypose.errors import ConfigError, InputError, OutputError

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
    with reporting_write_failures(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # only a disk's own errors: an EACCES inside the block may be a read of some input
        with reporting_write_failures(path, errnos=DISK_ERRNOS):
            yield tmp_path
        _chmod_like_open(tmp_path, path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# A failed write's errno in words, for OutputError's messages.
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or the process's file-size limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # more space would fix these
DISK_ERRNOS = (*FULL_ERRNOS, errno.EROFS)  # only ever a write's errors


def write_errno_meaning(e: OSError) -> str | None:
    """``e``'s reason in words and its errno's name (``read-only file system (EROFS)``), when ``e``
    is a write refused by the disk; None for any other error."""
    meaning = WRITE_ERRNOS.get(e.errno)
    return None if meaning is None else f"{meaning} ({errno.errorcode[e.errno]})"


def write_failure(e: OSError, path: str | os.PathLike, needed: int | None = None, fix: str | None = None) -> OutputError | None:
    """The :class:`OutputError` for ``e``, a write under ``path`` the disk refused (``needed``: the
    bytes it was writing, when known); None when ``e`` is another error, which keeps its own type."""
    meaning = write_errno_meaning(e)
    if meaning is None:
        return None
    if fix is None:
        fix = "free space there or write to another folder" if e.errno in FULL_ERRNOS else "choose a writable folder"
    size = f" ({needed / 1e6:.1f} MB)" if needed else ""
    return OutputError(f"{path}: cannot write{size}: {meaning}; {fix}")


@contextlib.contextmanager
def reporting_write_failures(
    path: str | os.PathLike, needed: int | None = None, fix: str | None = None, errnos: tuple[int, ...] | None = None
) -> Iterator[None]:
    """Inside the block, a write the disk refuses (full, read-only, over quota, forbidden; only
    ``errnos`` when given) raises :func:`write_failure`'s OutputError naming ``path``."""
    try:
        yield
    except OSError as e:
        error = write_failure(e, path, needed, fix) if errnos is None or e.errno in errnos else None
        if error is None:
            raise
        raise error from e


def probe_writable(folder: str | os.PathLike) -> OSError | None:
    """Write one byte to a new file in ``folder`` and remove it; the error, or None when it can be
    written. ``os.access`` cannot tell: it ignores read-only mounts, full disks, and (for root)
    permission bits."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".raypose-write-test-")
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as e:
        return e
    return None


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


MAX_JSON_DEPTH = 1024  # orjson's limit; COCO files nest 4 deep


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Load a JSON file.

    Raises:
        InputError: the file is missing, is not valid JSON or nests deeper than
            :data:`MAX_JSON_DEPTH`; the message names the file and, for a syntax error, the line
            and column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        with paused_gc():
            return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e):  # the stdlib parser would recurse until RecursionError
            raise InputError(_too_deep(path)) from None
        # else stdlib json: NaN/Infinity (then refused by the checks) and errors with line/column
    try:
        return json.loads(data)
    except RecursionError:
        raise InputError(_too_deep(path)) from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a text JSON file ({e.reason})") from None


def _too_deep(path: Path) -> str:
    return (
        f"{path}: nested deeper than {MAX_JSON_DEPTH} levels of lists and objects; no raypose file needs "
        "more than a few: this is not an annotation, results or tracks file"
    )


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


def check_output_dir(
    path: str | os.PathLike,
    option: str = "--out",
    inputs: tuple[str | os.PathLike | None, ...] = (),
    writes: tuple[str, ...] = (),
) -> Path:
    """Check, before any work, that ``path`` is or can be made a writable folder; return it as a Path.

    ``writes`` are the names the command writes into the folder, relative to it: plain names or
    glob patterns per path part (``"summary.json"``, ``"plots/*.png"``). An input that is one of
    them (the same resolved path, or the same file through a link) or the folder itself is refused.

    Raises:
        ConfigError: ``path`` or a parent of it is a file, it cannot be written, it is one of
            ``inputs``, or a file the command would write there is one of ``inputs``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder; {option} names a folder to write into")
    if path.is_dir():
        _check_writable(path, path, option)
    else:
        _check_parent_folders(path, option)
    for source in inputs:
        if source is not None:
            _refuse_writing_over(path, Path(source), option, writes)
    return path


def _refuse_writing_over(folder: Path, source: Path, option: str, writes: tuple[str, ...]) -> None:
    if _same_file(folder, source):
        raise ConfigError(
            f"{option} {folder}: is also an input ({source}); raypose writes into it and never touches its "
            "inputs: write to another folder"
        )
    name = _written_as(folder, source, writes)
    if name is not None:
        raise ConfigError(
            f"{option} {folder}: the command writes {name} there, and that is the input {source}; raypose "
            f"never overwrites its inputs: write to another folder, or move {source} out of it"
        )


def _written_as(folder: Path, source: Path, writes: tuple[str, ...]) -> str | None:
    """The name (relative to ``folder``) under which the command would write over ``source``, if any."""
    try:
        relative = source.absolute().resolve().relative_to(folder.absolute().resolve()).as_posix()
    except ValueError:
        relative = None
    for pattern in writes:
        if relative is not None and _matches(relative, pattern):
            return relative
        if folder.is_dir() and source.exists() and "**" not in pattern:  # a hard link or symlink to the input
            for existing in folder.glob(pattern):
                if existing.is_file() and os.path.samefile(existing, source):
                    return existing.relative_to(folder).as_posix()
    return None


def _matches(relative: str, pattern: str) -> bool:
    """Whether a POSIX relative path matches a glob pattern part by part (``*`` never crosses ``/``;
    a last part ``**`` matches anything under the folders before it)."""
    parts, pattern_parts = relative.split("/"), pattern.split("/")
    if pattern_parts[-1] == "**":
        head = pattern_parts[:-1]
        return len(parts) > len(head) and all(map(fnmatch.fnmatchcase, parts, head))
    return len(parts) == len(pattern_parts) and all(map(fnmatch.fnmatchcase, parts, pattern_parts))


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
    error = probe_writable(folder)  # os.access passes read-only mounts, full disks and (for root) modes
    meaning = write_errno_meaning(error) if error is not None else None
    if meaning is not None:
        fix = "free space there or choose another path" if error.errno in FULL_ERRNOS else "choose another path"
        raise ConfigError(f"{option} {path}: cannot write in {folder} ({meaning}); {fix}")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.absolute().resolve() == b.absolute().resolve()


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 100, **savefig_kwargs: Any) -> Path:
    """Write a matplotlib figure as PNG to a temporary name, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **savefig_kwargs)
    return Path(path)
