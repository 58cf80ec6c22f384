"""Files in storage, local and on a real S3 server (moto, on loopback): text written whole,
read back, missing files read as None, folders uploaded file by file."""

from __future__ import annotations

from pathlib import Path

import pytest

from raypose.storage import fetch_file, join, read_text, upload_folder, write_text


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
