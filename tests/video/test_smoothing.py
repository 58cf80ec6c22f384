"""Tests for raypose.video.smoothing: LOWESS with outlier replacement against known paths."""

from __future__ import annotations

import numpy as np
import pytest

from raypose.errors import ConfigError
from raypose.video.smoothing import SmoothingConfig, find_outliers, smooth_series, smooth_tracks
from raypose.video.synth_video import SynthVideoConfig, generate_synthetic_video
from raypose.video.tracks_io import Track, TrackSet


def _path(t: np.ndarray) -> np.ndarray:
    return np.stack([40 + 1.2 * t + 6 * np.sin(t / 9), 70 + 4 * np.cos(t / 7)], axis=1)


def test_smoothing_lowers_error_on_synthetic_video():
    video = generate_synthetic_video(SynthVideoConfig(num_frames=40, seed=3))
    noisy = video.detection_tracks()
    smoothed, report = smooth_tracks(noisy, SmoothingConfig())
    assert report.tracks == len(noisy.tracks) == 2
    for before, after in zip(noisy.tracks, smoothed.tracks):
        truth = video.gt_keypoints[before.id - 1][before.frames]
        err_before = np.linalg.norm(before.keypoints[..., :2] - truth, axis=-1).mean()
        err_after = np.linalg.norm(after.keypoints[..., :2] - truth, axis=-1).mean()
        assert err_after < 0.5 * err_before, (err_before, err_after)
        np.testing.assert_array_equal(after.frames, before.frames)  # no frames invented
        np.testing.assert_array_equal(after.keypoints[..., 2], before.keypoints[..., 2])  # scores kept


def test_injected_outliers_are_found_and_replaced():
    rng = np.random.default_rng(0)
    t = np.arange(80)
    truth = _path(t)
    xy = truth + rng.normal(0, 1.0, truth.shape)
    spikes = np.array([10, 33, 34, 60])
    xy[spikes] += [25.0, -18.0]
    smoothed, outliers, ok = smooth_series(t, xy, np.ones(len(t)), SmoothingConfig())
    assert ok
    assert outliers[spikes].all()
    assert outliers.sum() <= len(spikes) + 3  # few false alarms at 3 std
    assert np.linalg.norm(smoothed[spikes] - truth[spikes], axis=1).max() < 4.0


def test_outlier_threshold_controls_what_is_flagged():
    rng = np.random.default_rng(1)
    t = np.arange(60)
    xy = _path(t) + rng.normal(0, 1.0, (60, 2))
    xy[30, 0] += 6.0  # moderately off: an outlier at a low threshold, not at a high one
    good = np.ones(60, dtype=bool)
    assert find_outliers(t, xy, good, SmoothingConfig(outlier_std=1.5))[30]
    assert not find_outliers(t, xy, good, SmoothingConfig(outlier_std=8.0))[30]


def test_low_score_points_are_filled_and_gaps_respected():
    rng = np.random.default_rng(2)
    t = np.concatenate([np.arange(0, 30), np.arange(45, 70)])  # a 15-frame gap
    truth = _path(t.astype(float))
    xy = truth + rng.normal(0, 0.8, truth.shape)
    scores = np.full(len(t), 0.9)
    low = np.array([5, 6, 40])
    xy[low] = [[500.0, -300.0]] * 3  # garbage where the detector was unsure
    scores[low] = 0.02
    smoothed, outliers, ok = smooth_series(t, xy, scores, SmoothingConfig(min_score=0.1))
    assert ok and not outliers[low].any()  # low-score points are missing, not outliers
    assert np.linalg.norm(smoothed[low] - truth[low], axis=1).max() < 3.0


def test_too_few_points_leave_series_unchanged():
    t = np.arange(4)
    xy = np.array([[0.0, 0.0], [50.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    smoothed, outliers, ok = smooth_series(t, xy, np.ones(4), SmoothingConfig(min_points=5))
    assert not ok and not outliers.any()
    np.testing.assert_array_equal(smoothed, xy)


def test_report_counts_low_score_points():
    rng = np.random.default_rng(4)
    kps = np.zeros((30, 2, 3))
    kps[:, 0, :2] = _path(np.arange(30.0)) + rng.normal(0, 1, (30, 2))
    kps[:, 1, :2] = kps[:, 0, :2] + 10
    kps[..., 2] = 0.9
    kps[3, 1, 2] = 0.0
    tracks = TrackSet(fps=10.0, keypoint_names=("a", "b"), tracks=[Track(7, np.arange(30), kps)])
    _, report = smooth_tracks(tracks, SmoothingConfig())
    assert (report.tracks, report.points, report.low_score) == (1, 60, 1)
    assert report.outlier_mask[7].shape == (30, 2)


def test_window_overrides_frac():
    config = SmoothingConfig(frac=0.5, window=10)
    assert config.frac_for(100) == pytest.approx(0.1)
    assert SmoothingConfig(frac=0.5).frac_for(100) == pytest.approx(0.5)
    assert SmoothingConfig(frac=0.01, min_points=5).frac_for(100) == pytest.approx(0.05)


@pytest.mark.parametrize("kwargs", [{"frac": 0.0}, {"frac": 1.5}, {"outlier_std": 0}, {"window": 2}, {"min_score": 2}])
def test_bad_config_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        SmoothingConfig(**kwargs)
