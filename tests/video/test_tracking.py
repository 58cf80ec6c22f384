"""Tests for raypose.video.tracking: ids through crossings, occlusions, births and deaths."""

from __future__ import annotations

import numpy as np
import pytest

from raypose.errors import ConfigError
from raypose.schema import COCO23
from raypose.video.synth_video import SynthVideoConfig, generate_synthetic_video
from raypose.video.tracking import Tracker, TrackerConfig, box_iou, track_detections


def _true_people(video, track) -> set[int]:
    """The true person behind each detection a track took."""
    people = set()
    for frame, kps in zip(track.frames, track.keypoints):
        det = video.detections[frame]
        match = [n for n in range(len(det["person"])) if np.array_equal(det["keypoints"][n], kps)]
        assert len(match) == 1
        people.add(int(det["person"][match[0]]))
    return people


@pytest.mark.parametrize("match", ["oks", "iou"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ids_survive_crossing_and_occlusion(match, seed):
    video = generate_synthetic_video(SynthVideoConfig(num_frames=40, seed=seed))
    assert video.occluded.any(axis=1).all()
    tracks = track_detections(video.detections, COCO23.sigmas, TrackerConfig(match=match, max_gap=8))
    assert len(tracks) == 2, [len(t) for t in tracks]
    assert sorted(_true_people(video, t).pop() for t in tracks) == [0, 1]
    assert all(len(_true_people(video, t)) == 1 for t in tracks)
    total = sum(len(d["person"]) for d in video.detections)
    assert sum(len(t) for t in tracks) == total  # every detection went to a track


def test_head_on_crossing_keeps_direction():
    # Two people meeting head-on with identical boxes at the crossing: only the predicted motion
    # tells them apart, so track 1 must keep moving right after the crossing.
    sigmas = np.full(1, 0.1)
    frames = []
    for t in range(20):
        a, b = 10.0 + 4 * t, 86.0 - 4 * t
        frames.append({"keypoints": np.array([[[a, 50.0, 1.0]], [[b, 52.0, 1.0]]])})
    boxes = lambda kps: np.concatenate([kps[:, 0, :2] - 20, kps[:, 0, :2] + 20], axis=1)  # noqa: E731
    for det in frames:
        det["boxes"] = boxes(det["keypoints"])
    tracks = track_detections(frames, sigmas, TrackerConfig(match="iou"))
    first = tracks[0].keypoints[:, 0, 0]
    assert len(tracks) == 2 and np.all(np.diff(first) > 0)  # track 1 keeps moving right


def test_birth_death_and_gaps():
    sigmas = COCO23.sigmas
    person = np.zeros((23, 3))
    person[:, 0] = np.linspace(20, 40, 23)
    person[:, 1] = np.linspace(10, 90, 23)
    person[:, 2] = 0.9
    config = TrackerConfig(max_gap=3, min_length=2)
    tracker = Tracker(sigmas, config)
    seen = [0, 1, 2, 5, 6, 11, 12]  # gap of 2 (kept), then a gap of 4 (> max_gap: new track)
    other = [3, 4, 5]  # a second person appears at frame 3 and leaves
    flicker = [8]  # one-frame false positive: dropped by min_length
    for f in range(14):
        dets = []
        if f in seen:
            dets.append(person)
        if f in other:
            dets.append(person + [60, 0, 0])
        if f in flicker:
            dets.append(person + [-15, 5, 0])
        tracker.update(f, np.array(dets).reshape(-1, 23, 3))
    tracks = tracker.finish()
    assert [(t.id, t.frames.tolist()) for t in tracks] == [(1, [0, 1, 2, 5, 6]), (2, [3, 4, 5]), (3, [11, 12])]


def test_frames_must_increase_and_config_is_checked():
    tracker = Tracker(COCO23.sigmas)
    tracker.update(3, np.zeros((0, 23, 3)))
    with pytest.raises(ValueError):
        tracker.update(3, np.zeros((0, 23, 3)))
    with pytest.raises(ConfigError):
        TrackerConfig(match="centroid")
    with pytest.raises(ConfigError):
        TrackerConfig(max_gap=-1)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])
