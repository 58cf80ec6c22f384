"""Tests for raypose.video.tracks_io: tracks.json round trip and validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raypose.errors import InputError
from raypose.video.tracks_io import (
    Track,
    TrackSet,
    load_tracks,
    save_tracks,
    tracks_from_dict,
    tracks_to_dict,
)


def _tracks() -> TrackSet:
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(0, 100, (5, 3, 2)), rng.uniform(0, 1, (5, 3, 1))], axis=2)
    return TrackSet(
        fps=12.5,
        keypoint_names=("nose", "left_eye", "right_eye"),
        tracks=[Track(3, [0, 1, 2, 6, 7], kps), Track(9, [4], kps[:1])],
    )


def _valid_dict() -> dict:
    return tracks_to_dict(_tracks())


def test_round_trip(tmp_path):
    path = save_tracks(tmp_path / "out" / "tracks.json", _tracks())
    loaded = load_tracks(path)
    assert loaded.fps == 12.5 and loaded.keypoint_names == ("nose", "left_eye", "right_eye")
    assert [t.id for t in loaded.tracks] == [3, 9]
    np.testing.assert_array_equal(loaded.track(3).frames, [0, 1, 2, 6, 7])
    np.testing.assert_allclose(loaded.track(3).keypoints, _tracks().tracks[0].keypoints, atol=0.006)
    assert not list(path.parent.glob(".tracks.json.*"))  # no temp file left behind


def test_file_layout_is_the_documented_one(tmp_path):
    path = save_tracks(tmp_path / "tracks.json", _tracks())
    obj = json.loads(path.read_text())
    assert set(obj) == {"fps", "keypoint_names", "tracks"}
    assert set(obj["tracks"][0]) == {"id", "frames", "keypoints"}
    assert len(obj["tracks"][0]["keypoints"][0]) == 3 and len(obj["tracks"][0]["keypoints"][0][0]) == 3


def _break(change):
    obj = _valid_dict()
    change(obj)
    return obj


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda o: o.pop("fps"), "missing key"),
        (lambda o: o.update(fps=-1), "fps"),
        (lambda o: o.update(keypoint_names=["a", "a", "b"]), "repeat"),
        (lambda o: o["tracks"][0].update(id="x"), "id must be an integer"),
        (lambda o: o["tracks"][1].update(id=3), "unique"),
        (lambda o: o["tracks"][0].update(frames=[0, 2, 1, 6, 7]), "strictly increasing"),
        (lambda o: o["tracks"][0]["keypoints"].pop(), "one entry per frame"),
        (lambda o: o["tracks"][0]["keypoints"][3].pop(), "frame 6"),
        (lambda o: o["tracks"][0]["keypoints"][1][0].__setitem__(2, 1.5), "scores in [0, 1]"),
        (lambda o: o["tracks"][0]["keypoints"][1][0].__setitem__(0, "left"), "frame 1"),
    ],
)
def test_malformed_tracks_give_clear_errors(change, expected):
    with pytest.raises(InputError, match="my.json") as info:
        tracks_from_dict(_break(change), source="my.json")
    assert expected in str(info.value)


def test_error_names_the_track(tmp_path):
    obj = _break(lambda o: o["tracks"][1]["keypoints"][0].pop())
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(InputError, match=r"bad\.json: tracks\[1\] \(id 9\), frame 4"):
        load_tracks(path)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="line 1"):
        load_tracks(bad)
    with pytest.raises(InputError, match="not found"):
        load_tracks(tmp_path / "missing.json")
