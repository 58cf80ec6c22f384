import json

import pytest

from raypose.cli.main import main


def test_synth_then_stats_show_check(tmp_path, capsys):
    root = tmp_path / "d"
    assert (
        main(["data", "synth", "--out", str(root), "--train", "3", "--val", "2", "--size", "96", "128"]) == 0
    )
    merged = root / "annotations" / "person_keypoints_train2017_foot23.json"
    assert len(json.loads(merged.read_text())["annotations"][0]["keypoints"]) == 69
    assert main(["data", "stats", str(merged), "--out", str(tmp_path / "stats")]) == 0
    assert (tmp_path / "stats" / "summary.json").exists()
    assert (
        main(
            [
                "data",
                "show",
                str(merged),
                str(root / "train2017"),
                "--out",
                str(tmp_path / "show"),
                "--num",
                "2",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "show").glob("*.png"))) == 2
    assert (
        main(
            [
                "data",
                "check",
                str(merged),
                "--images",
                str(root / "train2017"),
                "--out",
                str(tmp_path / "check.json"),
            ]
        )
        == 0
    )
    assert "no errors" in capsys.readouterr().out
    assert json.loads((tmp_path / "check.json").read_text())["images"] == 3


def test_synth_no_prepare_then_prepare_and_merge(tmp_path, capsys):
    root = tmp_path / "d"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(root),
                "--train",
                "2",
                "--val",
                "1",
                "--size",
                "64",
                "80",
                "--no-prepare",
            ]
        )
        == 0
    )
    ann = root / "annotations"
    assert not (ann / "person_keypoints_val2017_foot23.json").exists()
    assert main(["data", "prepare", "--root", str(root)]) == 0
    assert (ann / "person_keypoints_val2017_foot23.json").exists()
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "data",
                "merge-foot",
                "--coco",
                str(ann / "person_keypoints_val2017.json"),
                "--foot",
                str(ann / "person_keypoints_val2017_foot_v1.json"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "matched" in capsys.readouterr().out


def test_merge_errors_exit_2_with_one_message_and_no_output(tmp_path, capsys):
    root = tmp_path / "d"
    main(
        [
            "data",
            "synth",
            "--out",
            str(root),
            "--train",
            "1",
            "--val",
            "1",
            "--size",
            "64",
            "80",
            "--no-prepare",
        ]
    )
    ann = root / "annotations"
    foot = json.loads((ann / "person_keypoints_val2017_foot_v1.json").read_text())
    foot["annotations"].append({"id": 424242, "image_id": 500001, "keypoints": [0] * 18})
    foot_path = tmp_path / "foot.json"
    foot_path.write_text(json.dumps(foot))
    out = tmp_path / "m.json"
    argv = [
        "data",
        "merge-foot",
        "--coco",
        str(ann / "person_keypoints_val2017.json"),
        "--foot",
        str(foot_path),
        "--out",
        str(out),
    ]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "raypose data merge-foot: error:" in err and "foot.json" in err and "424242" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main([*argv, "--allow-unmatched"]) == 0
    assert "1 foot-only" in capsys.readouterr().out


def test_check_exits_1_on_errors_and_2_on_unreadable(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    cat = {"id": 1, "name": "person", "keypoints": ["a"]}
    bad.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": 5, "height": 5}],
                "annotations": [{"id": 3, "image_id": 1, "keypoints": [1, 1, 5], "bbox": [0, 0, 2, 2]}],
                "categories": [cat],
            }
        )
    )
    assert main(["data", "check", str(bad)]) == 1
    assert "bad visibility" in capsys.readouterr().out
    (tmp_path / "broken.json").write_text("{")
    assert main(["data", "check", str(tmp_path / "broken.json")]) == 2


@pytest.mark.parametrize(
    "argv",
    [["data", "show", "missing.json", ".", "--out", "o"], ["data", "stats", "missing.json", "--out", "o"]],
)
def test_missing_input_is_a_clear_error(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "missing.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def _data_argv(synth_data, out) -> dict[str, list[str]]:
    """Every `raypose data` command that writes, with OUT as its --out."""
    ann, images = str(synth_data.val_ann), str(synth_data.val_images)
    return {
        "synth": ["data", "synth", "--out", out, "--train", "1", "--val", "1", "--size", "64", "80"],
        "stats": ["data", "stats", ann, "--out", out],
        "show": ["data", "show", ann, images, "--out", out, "--num", "1"],
        "check": ["data", "check", ann, "--out", out],
        "merge-foot": ["data", "merge-foot", "--coco", str(synth_data.val_coco), "--foot",
                       str(synth_data.val_foot), "--out", out],
    }


FOLDER_OUT = ("synth", "stats", "show")


@pytest.mark.parametrize("command", ["synth", "stats", "show", "check", "merge-foot"])
@pytest.mark.parametrize("where", ["wrong kind", "under a file"])
def test_out_of_the_wrong_kind_is_refused_before_work(synth_data, tmp_path, capsys, command, where):
    blocker = tmp_path / "blocker"
    if command in FOLDER_OUT:
        blocker.write_text("keep me")  # a file where a folder is expected
    else:
        blocker.mkdir()  # a folder where a file is expected
        (blocker / "inside.txt").write_text("keep me")
    if where == "under a file":
        blocker = tmp_path / "plain_file"
        blocker.write_text("keep me")
        out = blocker / "sub" / ("out" if command in FOLDER_OUT else "out.json")
    else:
        out = blocker
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(_data_argv(synth_data, str(out))[command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raypose data {command}: error: --out {out}") and err.count("\n") == 1
    assert "folder" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    assert "keep me" in (blocker.read_text() if blocker.is_file() else (blocker / "inside.txt").read_text())


@pytest.mark.parametrize("num", ["-2", "0"])
def test_show_refuses_a_number_of_images_below_one(synth_data, tmp_path, capsys, num):
    out = tmp_path / "show"
    assert main(["data", "show", str(synth_data.val_ann), str(synth_data.val_images), "--out", str(out),
                 "--num", num]) == 2
    assert f"--num must be at least 1 (the number of images to draw), got {num}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("which", ["--coco", "--foot"])
def test_merge_out_equal_to_an_input_keeps_the_input(synth_data, tmp_path, capsys, which):
    coco, foot = tmp_path / "coco.json", tmp_path / "foot.json"
    coco.write_bytes(synth_data.val_coco.read_bytes())
    foot.write_bytes(synth_data.val_foot.read_bytes())
    before = (coco.read_bytes(), foot.read_bytes())
    out = coco if which == "--coco" else foot
    assert main(["data", "merge-foot", "--coco", str(coco), "--foot", str(foot), "--out", str(out)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert (coco.read_bytes(), foot.read_bytes()) == before


def test_check_report_may_not_overwrite_the_annotations(synth_data, tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_bytes(synth_data.val_ann.read_bytes())
    assert main(["data", "check", str(ann), "--out", str(ann)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert ann.read_bytes() == synth_data.val_ann.read_bytes()


def test_check_output_names_only_the_ids_an_issue_has(tmp_path, capsys):
    data = json.loads(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "gone.jpg", "width": 0, "height": 5}, {"file_name": "x.jpg"}],
                "annotations": [{"image_id": 1, "keypoints": [1, 1, 2], "bbox": [0, 0, -2, 2]}],
                "categories": [{"id": 1, "name": "person", "keypoints": ["a"]}],
            }
        )
    )
    (tmp_path / "a.json").write_text(json.dumps(data))
    assert main(["data", "check", str(tmp_path / "a.json"), "--images", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "None" not in out
    assert "error: image 1: bad image size" in out
    assert "error: image 1: missing image file" in out
    assert "error: file: malformed image: image entry #1 (by position)" in out
    assert "error: annotation #0: malformed annotation: annotation #0 (by position) has no 'id'" in out
