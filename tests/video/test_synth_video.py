"""Tests for raypose.video.synth_video: the synthetic video and its truth."""

from __future__ import annotations

import numpy as np
import pytest

from raypose.errors import ConfigError
from raypose.video.synth_video import SynthVideoConfig, generate_synthetic_video


@pytest.fixture(scope="module")
def video():
    return generate_synthetic_video(SynthVideoConfig(num_frames=40, width=160, height=128, seed=5))


def test_shapes(video):
    assert video.frames.shape == (40, 128, 160, 3) and video.frames.dtype == np.uint8
    assert video.gt_keypoints.shape == (2, 40, 23, 2)
    assert len(video.detections) == 40
    for det in video.detections:
        n = len(det["person"])
        assert det["keypoints"].shape == (n, 23, 3) and det["boxes"].shape == (n, 4)
        assert det["outlier"].shape == (n, 23)


def test_people_cross_and_get_occluded(video):
    centre_x = video.gt_keypoints[..., 0].mean(axis=2)  # (P, T)
    left_of = centre_x[0] < centre_x[1]
    assert left_of[0] and not left_of[-1]  # they swap sides: the paths cross
    assert (video.occluded.sum(axis=1) >= 2).all()  # each walks behind the pillar
    for p in range(2):
        hidden = np.flatnonzero(video.occluded[p])
        assert all(p not in video.detections[t]["person"] for t in hidden)


def test_figures_are_drawn_where_the_truth_is(video):
    # The frame differs from the empty background around each person's hips, not far away.
    still = np.median(video.frames.astype(float), axis=0)
    t = 3
    diff = np.abs(video.frames[t].astype(float) - still).sum(axis=2)
    for p in range(2):
        x, y = video.gt_keypoints[p, t, 11].round().astype(int)  # left hip
        assert diff[y - 3 : y + 4, x - 3 : x + 4].max() > 30


def test_detections_are_jittered_truth_with_outliers(video):
    errors, outlier_errors = [], []
    for t, det in enumerate(video.detections):
        for n, p in enumerate(det["person"]):
            err = np.linalg.norm(det["keypoints"][n, :, :2] - video.gt_keypoints[p, t], axis=1)
            good = det["keypoints"][n, :, 2] >= 0.5
            errors.append(err[good & ~det["outlier"][n]])
            outlier_errors.append(err[det["outlier"][n]])
    errors, outlier_errors = np.concatenate(errors), np.concatenate(outlier_errors)
    assert 1.0 < np.median(errors) < 3.0  # jitter_px = 1.5 per coordinate
    assert len(outlier_errors) > 0 and outlier_errors.min() > 10


def test_same_seed_same_video():
    a = generate_synthetic_video(SynthVideoConfig(num_frames=6, seed=1))
    b = generate_synthetic_video(SynthVideoConfig(num_frames=6, seed=1))
    c = generate_synthetic_video(SynthVideoConfig(num_frames=6, seed=2))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.detections[3]["keypoints"], b.detections[3]["keypoints"])
    assert not np.array_equal(a.gt_keypoints, c.gt_keypoints)


def test_truth_tracks(video):
    gt = video.ground_truth_tracks()
    assert [t.id for t in gt.tracks] == [1, 2] and len(gt.tracks[0]) == 40
    noisy = video.detection_tracks()
    assert len(noisy.tracks[0]) == 40 - video.occluded[0].sum() - sum(
        0 not in d["person"] and not video.occluded[0, t] for t, d in enumerate(video.detections)
    )


def test_bad_config():
    with pytest.raises(ConfigError):
        SynthVideoConfig(num_frames=1)
    with pytest.raises(ConfigError):
        SynthVideoConfig(drop_prob=2.0)
