"""Every command with a folder ``--out`` refuses, before any work, a folder that would overwrite an input.

Each case puts an input at one of the names the command writes into its folder (or makes the
folder an input itself) and checks exit 2, a message naming the input and the file, and the
input byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from raypose.analysis.report import REPORT_FILES
from raypose.cli.main import main
from raypose.data.eda import SAMPLE_FILES, STATS_FILES
from raypose.evaluation.plots import EVAL_REPORT_FILES
from raypose.io import _matches
from raypose.training.overfit import OVERFIT_FILES
from raypose.video.pipeline import VIDEO_FILES


def _dets(synth_data) -> list[dict]:
    """Perfect detections of the validation people (their own keypoints, score 1)."""
    ann = json.loads(Path(synth_data.val_ann).read_text())
    return [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in ann["annotations"]
        if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0)
    ]


def _placed(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


# (command, name the input is placed at inside --out DIR, argv builder(input path, other files, DIR))
CASES = {
    "data stats": ("summary.json", lambda i, f, d: ["data", "stats", i, "--out", d]),
    "data stats plot": ("box_sizes.png", lambda i, f, d: ["data", "stats", i, "--out", d]),
    "data show": ("sample_000000000001.png", lambda i, f, d: ["data", "show", i, f["images"], "--out", d]),
    "analyze gt": ("summary.json", lambda i, f, d: ["analyze", i, f["dets"], "--out", d]),
    "analyze dets": ("per_detection.json", lambda i, f, d: ["analyze", f["gt"], i, "--out", d]),
    "analyze plot": ("plots/original_pr.png", lambda i, f, d: ["analyze", i, f["dets"], "--out", d]),
    "eval": ("metrics.json", lambda i, f, d: ["eval", i, f["dets"], "--out", d]),
    "video": ("overlay.mp4", lambda i, f, d: ["video", i, "--checkpoint", f["ckpt"], "--out", d]),
    "video checkpoint": (
        "summary.json",
        lambda i, f, d: ["video", f["video"], "--checkpoint", i, "--out", d],
    ),
    "overfit": ("overfit.json", lambda i, f, d: ["overfit", i, "--out", d]),
}


@pytest.fixture
def files(synth_data, tmp_path, tiny_train_config) -> dict[str, str]:
    dets = tmp_path / "inputs" / "dets.json"
    dets.parent.mkdir()
    dets.write_text(json.dumps(_dets(synth_data)))
    config = tmp_path / "inputs" / "config.json"  # JSON is YAML: a config file can carry any name
    config.write_text(json.dumps(tiny_train_config))
    video = tmp_path / "inputs" / "in.mp4"
    video.write_bytes(b"not decoded: the check comes first")
    ckpt = tmp_path / "inputs" / "model.pth"
    ckpt.write_bytes(b"not loaded: the check comes first")
    return {
        "gt": str(synth_data.val_ann),
        "dets": str(dets),
        "images": str(synth_data.val_images),
        "config": str(config),
        "video": str(video),
        "ckpt": str(ckpt),
    }


SOURCE_OF = {
    "data show": "gt",
    "analyze dets": "dets",
    "video": "video",
    "video checkpoint": "ckpt",
    "overfit": "config",
}


@pytest.mark.parametrize("case", list(CASES))
def test_input_at_a_written_name_is_refused(case, files, tmp_path, capsys):
    name, argv = CASES[case]
    out = tmp_path / "out"
    placed = _placed(Path(files[SOURCE_OF.get(case, "gt")]), out / name)
    before = placed.read_bytes()
    assert main(argv(str(placed), files, str(out))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert str(placed) in err and name in err and "--out" in err, err
    assert placed.read_bytes() == before
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [name]


def test_hard_link_in_the_folder_is_refused(synth_data, tmp_path, capsys):
    gt = _placed(Path(synth_data.val_ann), tmp_path / "gt.json")
    (tmp_path / "out").mkdir()
    os.link(gt, tmp_path / "out" / "summary.json")
    before = gt.read_bytes()
    assert main(["data", "stats", str(gt), "--out", str(tmp_path / "out")]) == 2
    assert "summary.json" in capsys.readouterr().err
    assert gt.read_bytes() == before


def test_input_folder_as_out_is_refused(synth_data, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(synth_data.val_images, images)
    before = sorted(p.name for p in images.iterdir())
    assert main(["data", "show", str(synth_data.val_ann), str(images), "--out", str(images)]) == 2
    err = capsys.readouterr().err
    assert f"--out {images}: is also an input" in err
    assert sorted(p.name for p in images.iterdir()) == before


def test_input_beside_the_written_files_is_fine(synth_data, tmp_path):
    out = tmp_path / "out"
    gt = _placed(Path(synth_data.val_ann), out / "annotations.json")
    before = gt.read_bytes()
    assert main(["data", "stats", str(gt), "--out", str(out)]) == 0
    assert (out / "summary.json").is_file() and gt.read_bytes() == before


def _written(out: Path) -> list[str]:
    return [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]


def test_declared_names_cover_what_is_written(synth_data, files, tmp_path):
    """The name lists the checks use are the files the commands write (they cannot drift apart)."""
    runs = {
        "stats": (STATS_FILES, ["data", "stats", files["gt"]]),
        "show": (SAMPLE_FILES, ["data", "show", files["gt"], files["images"], "--num", "2"]),
        "eval": (EVAL_REPORT_FILES, ["eval", files["gt"], files["dets"]]),
        "analyze": (
            REPORT_FILES,
            ["analyze", files["gt"], files["dets"], "--worst", "2", "--max-listed", "2"],
        ),
    }
    for name, (declared, argv) in runs.items():
        out = tmp_path / name
        assert main([*argv, "--out", str(out)]) == 0
        written = _written(out)
        assert written, name
        undeclared = [w for w in written if not any(_matches(w, pattern) for pattern in declared)]
        assert not undeclared, f"{name} writes {undeclared}, not in its declared names {declared}"
    assert set(VIDEO_FILES) >= {"tracks.json", "tracks_smoothed.json", "overlay.mp4", "summary.json"}
    assert set(OVERFIT_FILES) == {"overfit.json", "overfit.png"}


@pytest.mark.parametrize("where", ["best/space.yaml", "trial_0001/space.yaml", "mlflow_parent.json"])
def test_space_file_where_the_study_writes_is_refused(
    where, tmp_path, tiny_train_config, monkeypatch, capsys
):
    import yaml

    import raypose.tuning.study

    def started(*args, **kwargs):
        raise AssertionError("the study started before its folder was checked")

    monkeypatch.setattr(raypose.tuning.study, "run_study", started)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    study = tmp_path / "runs" / "mini"
    space = study / where
    space.parent.mkdir(parents=True)
    space.write_text(
        yaml.safe_dump(
            {
                "base": tiny_train_config,
                "search": {"optim.lr": {"loguniform": [1.0e-3, 2.0e-3]}},
                "tune": {"name": "mini", "num_samples": 2, "storage_path": str(tmp_path / "runs")},
            }
        )
    )
    before = space.read_bytes()
    assert main(["tune", str(space)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(space) in err and "study folder" in err, err
    assert space.read_bytes() == before


def test_space_file_beside_the_study_files_is_fine(tmp_path):
    from raypose.io import check_output_dir
    from raypose.tuning.study import STUDY_FILES

    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "space.yaml").write_text("search: {}\n")
    check_output_dir(tmp_path / "mini", inputs=(tmp_path / "mini" / "space.yaml",), writes=STUDY_FILES)
