"""Unwritable and full disks, on real small file systems: a read-only storage_path or MLflow store
is refused before any work, and a disk that fills up mid-write leaves no partial file, keeps what
was there, and ends in one message naming the folder (exit 2, no traceback).

The file systems are tmpfs mounts in a new user + mount namespace (``unshare``), mounted on a
folder under ``tmp_path``; they vanish with the command, so the helper lists their files before
they do. Where namespaces are not allowed, a "full" disk is a plain folder under a file-size
limit (RLIMIT_FSIZE: writes past it fail with EFBIG), and a read-only one skips.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from raypose.errors import ConfigError
from raypose.experiment_log import check_local_store

REPO = Path(__file__).resolve().parents[1]

# Runs inside the namespace: mount the disk, copy the seed onto it, make it read-only if asked,
# run the command, list the disk's files (path, bytes) while it is still mounted.
_IN_NAMESPACE = r"""
set -e
mount -t tmpfs -o "size=$DISK_SIZE" tmpfs "$DISK"
if [ -n "$DISK_SEED" ]; then cp -a "$DISK_SEED/." "$DISK/"; fi
if [ "$DISK_READ_ONLY" = 1 ]; then mount -o remount,ro "$DISK"; fi
set +e
"$@"
rc=$?
find "$DISK" -mindepth 1 -printf '%P\t%s\n' > "$DISK_LISTING"
exit $rc
"""


@functools.cache
def namespaces_allowed() -> bool:
    """Whether this machine lets an unprivileged-looking user+mount namespace mount a tmpfs (probed once)."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=64k tmpfs "{folder}"',
        ]
        try:
            return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


@dataclass
class DiskRun:
    """A command run with a small disk mounted: its process, and the disk's files afterwards."""

    proc: subprocess.CompletedProcess
    files: dict[str, int]  # path relative to the disk -> bytes

    @property
    def stderr(self) -> str:
        return self.proc.stderr


def run_on_small_disk(
    command: list[str],
    disk: Path,
    *,
    read_only: bool = False,
    size: str = "1m",
    seed: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> DiskRun:
    """Run ``command`` (cwd: the repository) with a ``size`` tmpfs on ``disk`` (made here, under tmp_path),
    holding a copy of ``seed``'s files, read-only if asked. Skips where neither a namespace mount nor
    (for a full disk) a file-size limit is available."""
    disk.mkdir(parents=True, exist_ok=True)
    listing = disk.with_name(disk.name + ".listing")
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "MPLBACKEND": "Agg",
        **(env or {}),
    }
    if namespaces_allowed():
        full_env.update(
            DISK=str(disk),
            DISK_SIZE=size,
            DISK_SEED=str(seed or ""),
            DISK_LISTING=str(listing),
            DISK_READ_ONLY=str(int(read_only)),
        )
        wrapped = [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            _IN_NAMESPACE,
            "sh",
            *command,
        ]
        proc = subprocess.run(
            wrapped, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
        )
        files = dict(line.rsplit("\t", 1) for line in listing.read_text().splitlines() if line)
        return DiskRun(proc, {path: int(n) for path, n in files.items()})
    if read_only:
        pytest.skip(
            "a read-only disk needs a mount (unshare --user --mount), which this machine does not allow; "
            "root ignores permission bits, so chmod cannot stand in for it"
        )
    if seed is not None:
        shutil.copytree(seed, disk, dirs_exist_ok=True)
    proc = subprocess.run(
        command,
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=functools.partial(_limit_file_size, _bytes(size)),
    )
    return DiskRun(
        proc, {str(p.relative_to(disk)): p.stat().st_size if p.is_file() else 0 for p in disk.rglob("*")}
    )


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _bytes(size: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def raypose(*args: str) -> list[str]:
    return [sys.executable, "-m", "raypose", *args]


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def assert_clean_refusal(run: DiskRun, *parts: str) -> None:
    """Exit 2, one error line naming every one of ``parts``, no traceback."""
    assert run.proc.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, run.stderr[-3000:]
    for part in parts:
        assert part in errors[0], errors[0]


# ----------------------------------------------------------------------------- read-only storage


def test_a_read_only_storage_path_is_refused_before_any_work(tiny_train_config, tmp_path):
    disk = tmp_path / "ro"
    config = write_config(tmp_path / "train.yaml", {**tiny_train_config, "storage_path": str(disk)})
    run = run_on_small_disk(raypose("train", str(config), "--local"), disk, read_only=True, timeout=120)
    assert_clean_refusal(run, f"storage_path {disk}", "read-only file system", "choose a writable folder")
    assert "epoch" not in run.stderr  # refused before training started
    assert run.files == {}


# ----------------------------------------------------------------------------- read-only MLflow store


@pytest.fixture(scope="module")
def mlflow_sqlite_seed(tmp_path_factory) -> Path:
    """A folder holding an initialised MLflow sqlite store, ``mlflow.db``."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow_seed")
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder


def test_a_read_only_sqlite_mlflow_store_is_refused(tiny_train_config, tmp_path, mlflow_sqlite_seed):
    disk = tmp_path / "ro"
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    config = write_config(
        tmp_path / "train.yaml", {**tiny_train_config, "mlflow": {"enabled": True, "tracking_uri": uri}}
    )
    run = run_on_small_disk(
        raypose("train", str(config), "--local"), disk, read_only=True, seed=mlflow_sqlite_seed, timeout=180
    )
    assert_clean_refusal(run, uri, "read-only file system", "mlflow.tracking_uri")
    assert run.files["mlflow.db"] == (mlflow_sqlite_seed / "mlflow.db").stat().st_size
    assert not (tmp_path / "runs" / "tiny" / "checkpoints").exists()  # refused before training


def test_a_read_only_file_mlflow_store_is_refused(tiny_train_config, tmp_path):
    disk = tmp_path / "ro"
    uri = (disk / "mlruns").as_uri()
    config = write_config(
        tmp_path / "train.yaml", {**tiny_train_config, "mlflow": {"enabled": True, "tracking_uri": uri}}
    )
    allow = {"MLFLOW_ALLOW_FILE_STORE": "true"}  # MLflow 3 refuses its file store otherwise
    run = run_on_small_disk(raypose("train", str(config), "--local"), disk, read_only=True, timeout=180, env=allow)
    assert_clean_refusal(run, uri, "read-only file system", "mlflow.tracking_uri")
    assert not (tmp_path / "runs" / "tiny" / "checkpoints").exists()


def test_a_file_mlflow_store_is_refused_unless_mlflow_is_told_to_allow_it(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE=true") as e:
        check_local_store(uri)
    assert uri in str(e.value) and "sqlite:///" in str(e.value)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_local_store(uri)  # a writable folder: fine once allowed


# ----------------------------------------------------------------------------- full disks


# A LocalSession on the small disk stores a small checkpoint, then one too big for what is left.
_TWO_CHECKPOINTS = r"""
import os, sys, tempfile
from pathlib import Path
from raypose.errors import RayposeError
from raypose.training.sessions import LocalSession

session = LocalSession(Path(sys.argv[1]) / "run")
for epoch, size in ((1, 200_000), (2, 3_000_000)):
    folder = Path(tempfile.mkdtemp(prefix="raypose-ckpt-"))
    (folder / "checkpoint.pth").write_bytes(os.urandom(size))
    try:
        session.report({"epoch": epoch, "oks_map": 0.1}, folder)
    except RayposeError as e:
        print(f"raypose train: error: {e}", file=sys.stderr)
        sys.exit(2)
"""


def test_a_checkpoint_that_does_not_fit_leaves_no_partial_copy_and_keeps_the_last_one(tmp_path):
    disk, tmp = tmp_path / "disk", tmp_path / "tmp"
    tmp.mkdir()
    run = run_on_small_disk(
        [sys.executable, "-c", _TWO_CHECKPOINTS, str(disk)], disk, size="1m", env={"TMPDIR": str(tmp)}
    )
    assert_clean_refusal(
        run,
        str(disk / "run" / "checkpoints"),
        "no space left",
        "3.0 MB",
        "free space or choose another storage_path",
    )
    assert run.files["run/checkpoints/epoch_0001/checkpoint.pth"] == 200_000  # the last good one, whole
    assert not [f for f in run.files if "epoch_0002" in f]  # no partial copy, no .tmp folder
    assert "run/metrics.jsonl" in run.files


# The same move where the disk looks big enough but a write fails mid-file (a file-size limit: EFBIG).
_MOVE_PAST_A_LIMIT = r"""
import os, resource, signal, sys
from pathlib import Path
from raypose.errors import RayposeError
from raypose.storage import move_folder

source, dest = Path(sys.argv[1]), Path(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    move_folder(source, dest)
except RayposeError as e:
    print(f"raypose train: error: {e}", file=sys.stderr)
    sys.exit(2)
"""


def test_a_copy_that_fails_mid_file_removes_what_it_copied_and_keeps_the_source(tmp_path):
    source, disk = tmp_path / "ckpt", tmp_path / "disk"
    source.mkdir()
    (source / "a.json").write_text("{}")
    (source / "checkpoint.pth").write_bytes(os.urandom(3_000_000))
    run = run_on_small_disk(
        [sys.executable, "-c", _MOVE_PAST_A_LIMIT, str(source), str(disk / "epoch_0001.tmp")], disk, size="8m"
    )
    assert_clean_refusal(run, str(disk), "file too large", "(EFBIG)", "3.0 MB", "choose another storage_path")
    assert run.files == {}  # the partial copy is gone
    assert (source / "checkpoint.pth").stat().st_size == 3_000_000  # the source is kept for the caller


def test_a_full_disk_during_training_ends_cleanly(tiny_train_config, tmp_path):
    disk, tmp = tmp_path / "disk", tmp_path / "tmp"
    tmp.mkdir()
    config = write_config(tmp_path / "train.yaml", {**tiny_train_config, "storage_path": str(disk)})
    run = run_on_small_disk(
        raypose("train", str(config), "--local"), disk, size="2m", env={"TMPDIR": str(tmp)}, timeout=300
    )
    assert_clean_refusal(run, str(disk), "no space left", "free space or choose another storage_path")
    assert not [f for f in run.files if f.endswith(".tmp") or "/.checkpoint" in f], run.files
    assert not list(tmp.glob("raypose-ckpt-*"))  # the temporary checkpoint folder is gone too


def test_a_full_disk_during_data_synth_leaves_the_out_folder_as_it_was(tmp_path):
    disk, seed = tmp_path / "disk", tmp_path / "seed"
    (seed / "set").mkdir(parents=True)
    (seed / "set" / "notes.txt").write_text("mine")
    out = disk / "set"
    run = run_on_small_disk(
        raypose("data", "synth", "--out", str(out), "--train", "120", "--val", "20"),
        disk,
        size="1m",
        seed=seed,
        timeout=180,
    )
    assert_clean_refusal(run, str(out), "no space left")
    assert run.files == {"set": run.files["set"], "set/notes.txt": 4}  # nothing of this run is left


def test_a_full_disk_during_data_synth_into_a_new_folder_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    out = disk / "new" / "set"
    run = run_on_small_disk(
        raypose("data", "synth", "--out", str(out), "--train", "120", "--val", "20"),
        disk,
        size="1m",
        timeout=180,
    )
    assert_clean_refusal(run, str(out), "no space left")
    assert not [f for f in run.files if f.startswith("new/set")], run.files
