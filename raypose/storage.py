"""Files in a run's storage, which is a local folder or a URI (``s3://``, ``gs://``) that every
node of a cluster sees. Pure pyarrow: no Ray, no MLflow.

pyarrow finds S3 credentials the usual way (``AWS_ACCESS_KEY_ID`` ..., instance roles) and an
S3-compatible store (MinIO, Ceph, moto) through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from raypose.io import atomic_path, write_text_atomic


def is_uri(path: str) -> bool:
    """Whether ``path`` names remote storage (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI (always ``/``)."""
    return "/".join([base.rstrip("/"), *parts])


def _filesystem(location: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(location if "://" in location else str(Path(location).resolve()))


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
