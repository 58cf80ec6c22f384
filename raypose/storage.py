"""Files in a run's storage, which is a local folder or a URI (``s3://``, ``gs://``) that every
node of a cluster sees. Pure pyarrow: no Ray, no MLflow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from raypose.io import atomic_path


def is_uri(path: str) -> bool:
    """Whether ``path`` names remote storage (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


def fetch_file(source: str, dest: Path) -> Path:
    """Copy ``source`` (a local path or a URI) to the local file ``dest``, atomically."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(source if "://" in source else str(Path(source).resolve()))
    with atomic_path(dest) as tmp, filesystem.open_input_stream(path) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, length=16 << 20)
    return dest
