"""Files in storage, local and on a real S3 server (moto, on loopback): text written whole,
read back, missing files read as None, folders uploaded file by file."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypose.storage import (
    delete_folder,
    fetch_file,
    folder_bytes,
    join,
    list_folders,
    read_text,
    upload_folder,
    write_text,
)


def make_folder(root: Path) -> Path:
    (root / "analysis").mkdir(parents=True)
    (root / "metrics.json").write_text('{"AP": 0.5}')
    (root / "analysis" / "report.html").write_text("<html/>")
    (root / "checkpoint.pth").write_bytes(bytes(range(256)) * 4096)  # 1 MiB, binary
    return root


def test_local_text_and_folder(tmp_path):
    study = str(tmp_path / "runs" / "study")
    assert read_text(join(study, "state.json")) is None
    write_text(join(study, "state.json"), '{"run_id": "abc"}')
    assert read_text(join(study, "state.json")) == '{"run_id": "abc"}'
    # written through a temporary name beside it: nothing else is left in the folder
    assert [p.name for p in Path(study).iterdir()] == ["state.json"]
    upload_folder(make_folder(tmp_path / "best"), join(study, "best"))
    assert (Path(study) / "best" / "analysis" / "report.html").read_text() == "<html/>"
    assert (Path(study) / "best" / "checkpoint.pth").read_bytes() == (tmp_path / "best" / "checkpoint.pth").read_bytes()


@pytest.mark.s3
def test_s3_text_folder_and_fetch(s3_server, s3_bucket, tmp_path):
    study = f"s3://{s3_bucket}/study/mini"
    assert read_text(join(study, "state.json")) is None
    write_text(join(study, "state.json"), '{"run_id": "abc"}')
    assert read_text(join(study, "state.json")) == '{"run_id": "abc"}'
    upload_folder(make_folder(tmp_path / "best"), join(study, "best"))
    assert sorted(s3_server.keys(s3_bucket)) == [
        "study/mini/best/analysis/report.html", "study/mini/best/checkpoint.pth", "study/mini/best/metrics.json",
        "study/mini/state.json",
    ]
    fetched = fetch_file(join(study, "best", "checkpoint.pth"), tmp_path / "fetched.pth")
    assert fetched.read_bytes() == (tmp_path / "best" / "checkpoint.pth").read_bytes()


def checkpoint_folders(run: str, tmp_path: Path) -> None:
    """Three checkpoint folders of 1 MiB and some bytes each, and a file beside them, under ``run``."""
    for name in ("epoch_0001", "epoch_0002", "epoch_0002_step_000010"):
        upload_folder(make_folder(tmp_path / name), join(run, name))
    write_text(join(run, "checkpoint_manager_snapshot.json"), "{}")


def pruned(run: str) -> tuple[list[str], int]:
    assert list_folders(join(run, "absent")) == [] and folder_bytes(join(run, "absent")) == 0
    one = folder_bytes(join(run, "epoch_0001"))
    assert 1_048_576 < one < 1_050_000  # every file under the folder, its subfolders' too
    assert folder_bytes(run) == 3 * one + 2
    delete_folder(join(run, "epoch_0002_step_000010"))
    delete_folder(join(run, "epoch_0001"))
    delete_folder(join(run, "never_there"))  # nothing to do, no error
    return list_folders(run), folder_bytes(run)


def test_local_checkpoint_folders_listed_sized_and_deleted(tmp_path):
    run = str(tmp_path / "train" / "run")
    checkpoint_folders(run, tmp_path)
    assert list_folders(run) == ["epoch_0001", "epoch_0002", "epoch_0002_step_000010"]
    folders, size = pruned(run)
    assert folders == ["epoch_0002"] and size == folder_bytes(join(run, "epoch_0002")) + 2


@pytest.mark.s3
def test_s3_checkpoint_folders_listed_sized_and_deleted(s3_server, s3_bucket, tmp_path):
    run = f"s3://{s3_bucket}/train/run"
    checkpoint_folders(run, tmp_path)
    assert list_folders(run) == ["epoch_0001", "epoch_0002", "epoch_0002_step_000010"]
    folders, size = pruned(run)
    assert folders == ["epoch_0002"] and size == folder_bytes(join(run, "epoch_0002")) + 2
    # the files left (pyarrow leaves an empty marker, "train/run/", so the run's folder still lists)
    assert sorted(k.split("/")[2] for k in s3_server.keys(s3_bucket) if not k.endswith("/")) == [
        "checkpoint_manager_snapshot.json", "epoch_0002", "epoch_0002", "epoch_0002"]
