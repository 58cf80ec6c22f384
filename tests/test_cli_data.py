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
