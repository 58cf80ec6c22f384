"""Every command that reads a JSON input refuses a malformed one the README's way.

A table of malformed files per kind (annotations, foot annotations, detections, tracks) is run
through every command that reads that kind: each must exit 2 with one message naming the file,
and never print a traceback. :data:`COMMANDS` lists every sub-command of ``raypose`` with the
kinds it reads; a new command fails :func:`test_every_command_is_in_the_table` until it is listed.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from raypose.cli.main import build_parser, main

Json = dict | list


def _first_person(data: dict) -> dict:
    return next(a for a in data["annotations"] if any(v > 0 for v in a["keypoints"][2::3]))


def _set(where: Callable[[dict], dict], **values) -> Callable[[Json], Json]:
    def mutate(data: Json) -> Json:
        where(data).update(values)
        return data

    return mutate


def _drop_file_name(data: dict) -> dict:
    del data["images"][0]["file_name"]
    return data


def _duplicate_annotation(data: dict) -> dict:
    data["annotations"].append(dict(_first_person(data)))
    return data


_image = lambda d: d["images"][0]  # noqa: E731
_person = _first_person

# Malformed files by kind: name -> raw bytes, or a mutation of the kind's good file.
BYTES = {
    "empty file": b"",
    "not UTF-8": b'{"images": "\xff\xfe\xfa"}',
    "nested 100000 deep": b"[" * 100_000,
    "top-level string": b'"annotations"',
    "truncated": b'{"images": [',
}
ANNOTATION_CASES: dict[str, Callable[[Json], Json]] = {
    "top-level array": lambda d: [d],
    "annotation id 2**70": _set(_person, id=2**70),
    "image width 1e308": _set(_image, width=1e308),
    "Infinity token": _set(_person, area=math.inf),
    "list-valued image_id": _set(_person, image_id=[1]),
    "list-valued category_id": _set(_person, category_id=[1]),
    "string image id": _set(_image, id="1"),
    "file_name null": _set(_image, file_name=None),
    "file_name integer": _set(_image, file_name=7),
    "file_name missing": _drop_file_name,
    "iscrowd '0'": _set(_person, iscrowd="0"),
    "area 1e308": _set(_person, area=1e308),
    "float annotation id": _set(_person, id=3.0),
    "float image_id": _set(_person, image_id=1.5),
    "duplicate annotation ids": _duplicate_annotation,
}
FOOT_CASES = {
    "top-level array": lambda d: [d],
    "annotation id 2**70": _set(_person, id=2**70),
    "float annotation id": _set(_person, id=3.0),
    "list-valued image_id": _set(_person, image_id=[1]),
    "Infinity token": lambda d: (_person(d)["keypoints"].__setitem__(-3, math.inf), d)[1],
    "duplicate annotation ids": _duplicate_annotation,
}
DETECTION_CASES = {
    "top-level object": lambda d: {"detections": d},
    "image_id 2**70": _set(lambda d: d[0], image_id=2**70),
    "list-valued image_id": _set(lambda d: d[0], image_id=[1]),
    "Infinity score": _set(lambda d: d[0], score=math.inf),
    "string score": _set(lambda d: d[0], score="0.9"),
}
TRACK_CASES = {
    "top-level array": lambda d: [d],
    "track id 2**70": _set(lambda d: d["tracks"][0], id=2**70),
    "frame 2**70": _set(lambda d: d["tracks"][0], frames=[0, 2**70]),
    "Infinity keypoint": lambda d: (d["tracks"][0]["keypoints"][0][0].__setitem__(0, math.inf), d)[1],
    "string fps": _set(lambda d: d, fps="25"),
}
CASES = {
    "annotations": ANNOTATION_CASES,
    "foot": FOOT_CASES,
    "detections": DETECTION_CASES,
    "tracks": TRACK_CASES,
}


class Inputs:
    """Good inputs of every kind in ``tmp`` (from the synthetic set) and the folder to write into."""

    def __init__(self, synth, tmp: Path):
        self.tmp = tmp
        self.gt = synth.val_ann
        self.coco = synth.val_coco
        self.foot = synth.val_foot
        self.images = synth.val_images
        gt = json.loads(self.gt.read_text())
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"],
                 "score": 0.9} for a in gt["annotations"] if not a.get("iscrowd")]  # fmt: skip
        self.dets = tmp / "dets.json"
        self.dets.write_text(json.dumps(dets))
        tracks = {"fps": 25.0, "keypoint_names": ["a", "b"],
                  "tracks": [{"id": 1, "frames": [0, 1], "keypoints": [[[1, 2, 0.5], [3, 4, 0.5]]] * 2}]}  # fmt: skip
        self.tracks = tmp / "tracks.json"
        self.tracks.write_text(json.dumps(tracks))
        self.image = next(iter(sorted(self.images.iterdir())))

    def good(self, kind: str) -> Path:
        return {"annotations": self.gt, "foot": self.foot, "detections": self.dets, "tracks": self.tracks}[
            kind
        ]

    def out(self, name: str) -> str:
        return str(self.tmp / "out" / name)


def _prepare_root(i: Inputs, coco: Path, foot: Path) -> list[str]:
    root = i.tmp / "root"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "person_keypoints_val2017.json").write_bytes(coco.read_bytes())
    (root / "annotations" / "person_keypoints_val2017_foot_v1.json").write_bytes(foot.read_bytes())
    return ["data", "prepare", "--root", str(root)]


Call = Callable[[Inputs, Path], list[str]]
# Command -> {kind it reads: how to call it with a bad file of that kind}; {} reads none of them.
COMMANDS: dict[str, dict[str, Call]] = {
    "data merge-foot": {
        "annotations": lambda i, bad: [
            "data",
            "merge-foot",
            "--coco",
            str(bad),
            "--foot",
            str(i.foot),
            "--out",
            i.out("m.json"),
        ],
        "foot": lambda i, bad: [
            "data",
            "merge-foot",
            "--coco",
            str(i.coco),
            "--foot",
            str(bad),
            "--out",
            i.out("m.json"),
        ],
    },  # fmt: skip
    "data prepare": {
        "annotations": lambda i, bad: _prepare_root(i, bad, i.foot),
        "foot": lambda i, bad: _prepare_root(i, i.coco, bad),
    },
    "data synth": {},  # writes a data set, reads no JSON
    "data stats": {"annotations": lambda i, bad: ["data", "stats", str(bad), "--out", i.out("stats")]},
    "data show": {
        "annotations": lambda i, bad: ["data", "show", str(bad), str(i.images), "--out", i.out("show")]
    },
    "data check": {"annotations": lambda i, bad: ["data", "check", str(bad)]},
    "eval": {
        "annotations": lambda i, bad: ["eval", str(bad), str(i.dets)],
        "detections": lambda i, bad: ["eval", str(i.gt), str(bad)],
    },
    "predict": {
        "annotations": lambda i, bad: [
            "predict",
            str(i.tmp / "none.pt"),
            str(i.image),
            "--out",
            i.out("p.json"),
            "--ann",
            str(bad),
            "--device",
            "cpu",
        ],
    },  # fmt: skip
    "analyze": {
        "annotations": lambda i, bad: ["analyze", str(bad), str(i.dets), "--out", i.out("a")],
        "detections": lambda i, bad: ["analyze", str(i.gt), str(bad), "--out", i.out("a")],
    },
    # train, overfit, tune and submit read a YAML config; the annotation files it names are read by the
    # training loader and checked before any epoch (tests/data/test_annotations.py, check_training_annotations).
    "train": {},
    "overfit": {},
    "tune": {},
    "submit": {},
    "video": {},  # reads a video file
    "smooth": {"tracks": lambda i, bad: ["smooth", str(bad), "--out", i.out("s.json")]},
    "video-synth": {},  # writes a video, reads nothing
}


# Commands that list every problem of a file they can read (exit 1) instead of stopping at the first.
REPORTS = {"data check"}


def _leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                names.extend(_leaf_commands(sub, (*prefix, name)) or [" ".join((*prefix, name))])
    return names


def test_every_command_is_in_the_table():
    commands = _leaf_commands(build_parser())
    missing = sorted(set(commands) - set(COMMANDS))
    assert not missing, f"add {missing} to COMMANDS in {__file__} (with the JSON kinds they read, or {{}})"
    assert not set(COMMANDS) - set(commands), "COMMANDS lists commands that no longer exist"


def _bad_file(inputs: Inputs, kind: str, case: str) -> Path:
    path = inputs.tmp / f"bad-{kind}.json"
    if case in BYTES:
        path.write_bytes(BYTES[case])
    else:
        path.write_text(json.dumps(CASES[kind][case](json.loads(inputs.good(kind).read_text()))))
    return path


ROWS = [
    (command, kind, case)
    for command, kinds in COMMANDS.items()
    for kind in kinds
    for case in [*BYTES, *CASES[kind]]
]


@pytest.fixture(scope="module")
def inputs(synth_data, tmp_path_factory) -> Inputs:
    return Inputs(synth_data, tmp_path_factory.mktemp("malformed"))


@pytest.mark.parametrize(("command", "kind", "case"), ROWS, ids=[" / ".join(row) for row in ROWS])
def test_a_malformed_file_exits_2_naming_the_file(inputs, capsys, command, kind, case):
    bad = _bad_file(inputs, kind, case)
    before = bad.read_bytes()
    argv = COMMANDS[command][kind](inputs, bad)
    shown = bad if command != "data prepare" else Path(argv[-1]) / "annotations"
    code = main(argv)
    out, err = capsys.readouterr()
    if command in REPORTS and code == 1:  # a readable file: every problem listed, as errors
        assert out.startswith(f"{bad}: ") and "  error: " in out and "Traceback" not in out + err, out
        return
    assert code == 2, err
    assert err.startswith(f"raypose {command}: error: ") and str(shown) in err, err
    assert "Traceback" not in err
    assert bad.read_bytes() == before  # inputs are never touched
