"""Files in a run's storage, which is a local folder or a URI (``s3://``, ``gs://``) that every
node of a cluster sees. Pure pyarrow: no Ray, no MLflow.

pyarrow finds S3 credentials the usual way (``AWS_ACCESS_KEY_ID`` ..., instance roles) and an
S3-compatible store (MinIO, Ceph, moto) through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from raypose.errors import ConfigError, OutputError
from raypose.io import (
    FULL_ERRNOS,
    atomic_path,
    probe_writable,
    reporting_write_failures,
    write_errno_meaning,
    write_failure,
    write_text_atomic,
)

# What to do when storage is full, in the messages of a checkpoint that does not fit.
FULL_STORAGE_FIX = "free space or choose another storage_path"


def is_uri(path: str) -> bool:
    """Whether ``path`` names remote storage (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI (always ``/``)."""
    return "/".join([base.rstrip("/"), *parts])


def _filesystem(location: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(location if "://" in location else str(Path(location).resolve()))


def check_writable(location: str, option: str = "storage_path") -> None:
    """Refuse, before any work, a local ``location`` that cannot be written: its nearest existing
    folder gets a one-byte file, removed at once (read-only mounts and, for root, permission bits
    fool ``os.access``). A URI (``s3://``, ``gs://``) is not probed.

    Raises:
        ConfigError: naming ``option``, ``location``, the reason in words and the fix.
    """
    if is_uri(location):
        return
    target = Path(location.removeprefix("file://")).absolute()
    folder = target
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {location}: {folder} is a file, not a folder; choose a folder")
    error = probe_writable(folder)
    meaning = write_errno_meaning(error) if error is not None else None
    if error is not None and meaning is None:
        raise error
    if meaning is not None:
        fix = (
            "free space there or choose another folder"
            if error.errno in FULL_ERRNOS
            else "choose a writable folder"
        )
        where = "" if folder == target else f" (in {folder})"
        raise ConfigError(f"{option} {location}: {meaning}{where}; {fix}")


def move_folder(source: Path, dest: Path, fix: str = FULL_STORAGE_FIX) -> None:
    """Move the local folder ``source`` to ``dest`` (which must not exist): a rename on one disk,
    else a copy, then ``source`` removed. A copy that fails removes all it copied and leaves
    ``source`` as it was; one that cannot fit is refused before it starts.

    Raises:
        OutputError: ``dest``'s disk is full, read-only or over quota; the message names the
            folder, the bytes to copy and ``fix``.
    """
    source, dest = Path(source), Path(dest)
    try:
        os.rename(source, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            error = write_failure(e, dest.parent, fix=fix)
            if error is None:
                raise
            raise error from e
    needed = folder_bytes(str(source))
    free = shutil.disk_usage(dest.parent).free
    if needed > free:
        raise OutputError(
            f"{dest.parent}: cannot write ({needed / 1e6:.1f} MB, {free / 1e6:.1f} MB free): "
            f"no space left on the device; {fix}"
        )
    with reporting_write_failures(dest.parent, needed=needed, fix=fix):
        dest.mkdir()
    try:
        with reporting_write_failures(dest.parent, needed=needed, fix=fix):
            for item in sorted(source.rglob("*")):
                target = dest / item.relative_to(source)
                if item.is_dir():
                    target.mkdir()
                else:
                    shutil.copyfile(item, target)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    shutil.rmtree(source)


def fetch_file(source: str, dest: Path) -> Path:
    """Copy ``source`` (a local path or a URI) to the local file ``dest``, atomically."""
    filesystem, path = _filesystem(source)
    with atomic_path(dest) as tmp, filesystem.open_input_stream(path) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, length=16 << 20)
    return dest


def write_text(location: str, text: str) -> str:
    """Write ``text`` to ``location`` (a local path: atomically; a URI: one object put, which
    S3 and GCS make visible whole or not at all)."""
    if not is_uri(location):
        write_text_atomic(location.removeprefix("file://"), text)
        return location
    filesystem, path = _filesystem(location)
    with filesystem.open_output_stream(path) as out:
        out.write(text.encode())
    return location


def read_text(location: str) -> str | None:
    """The text at ``location``, or ``None`` when there is no file there."""
    from pyarrow import fs

    filesystem, path = _filesystem(location)
    if filesystem.get_file_info(path).type != fs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as src:
        return src.read().decode()


def upload_folder(folder: Path, location: str) -> str:
    """Copy the local ``folder``'s files under ``location`` (a local path or a URI), each file
    whole: written to a temporary name and renamed locally, one put per object on S3/GCS."""
    filesystem, root = _filesystem(location)
    for source in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = source.relative_to(folder).as_posix()
        if is_uri(location):
            with open(source, "rb") as src, filesystem.open_output_stream(f"{root}/{rel}") as out:
                shutil.copyfileobj(src, out, length=16 << 20)
        else:
            with atomic_path(Path(root) / rel) as tmp:
                shutil.copyfile(source, tmp)
    return location


def list_folders(location: str) -> list[str]:
    """The names of the folders directly under ``location`` (``[]`` when there is none)."""
    from pyarrow import fs

    filesystem, path = _filesystem(location)
    if filesystem.get_file_info(path).type != fs.FileType.Directory:
        return []
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=False))
    return sorted(info.base_name for info in infos if info.type == fs.FileType.Directory)


def delete_folder(location: str) -> None:
    """Remove ``location`` and everything under it (nothing when it is not there)."""
    from pyarrow import fs

    filesystem, path = _filesystem(location)
    if filesystem.get_file_info(path).type == fs.FileType.Directory:
        filesystem.delete_dir(path)


def folder_bytes(location: str) -> int:
    """The bytes of the files under ``location``."""
    from pyarrow import fs

    filesystem, path = _filesystem(location)
    if filesystem.get_file_info(path).type != fs.FileType.Directory:
        return 0
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    return sum(info.size or 0 for info in infos if info.type == fs.FileType.File)
