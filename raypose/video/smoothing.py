"""LOWESS smoothing of tracked keypoints, with outlier replacement (the design notes' "Jitters").

For each track, each keypoint and each coordinate (x and y separately), as a function of the frame
index ``t`` (so gaps in a track keep their real length in time):

1. **Missing points.** Points whose score is below ``min_score`` are treated as missing.
2. **Outliers.** Each remaining point is compared with the straight line through its nearest
   neighbours in time (the design notes: a point that "deviates from its nearest neighbour by more
   than 1 std"). The scale is a robust standard deviation of those deviations,
   ``sigma = 1.4826 * median(|deviation|)``, floored at ``min_scale_px`` so near-perfect data does
   not make sub-pixel wobbles "outliers". A point whose x *or* y deviation exceeds
   ``outlier_std * sigma`` (and is the largest among its neighbours', since an outlier also
   displaces its neighbours' lines) is an outlier; the search repeats without it. A detector error
   affects the point, so an outlier in x or y replaces both. The notes used 1 std on the raw
   (outlier-inflated) spread; with a robust sigma the default is 3.
3. **Replacement.** Missing points and outliers get a value linearly interpolated in time from the
   good points around them (held constant before the first / after the last good point).
4. **Smoothing.** A final LOWESS pass over the cleaned series gives the output at every frame of the
   track.

What is and is not invented:

* Frames where the track is absent (gaps between its ``frames``) are **not** added: the smoothed
  track has exactly the input's frames. Gaps only stretch the time axis of the fit.
* Low-score points and outliers are **replaced** (positions), but **keep their original score**, so
  a renderer that hides low-confidence points still hides them.
* A keypoint with fewer than ``min_points`` good points in a track is left as it is.

The window: ``frac`` is statsmodels' fraction of the track's frames used for each local linear fit;
``window`` (frames), when given, overrides it with a fixed span regardless of track length (better
for long videos). Either way at least ``min_points`` frames are used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from statsmodels.nonparametric.smoothers_lowess import lowess

from raypose.errors import ConfigError
from raypose.video.tracks_io import Track, TrackSet

log = logging.getLogger(__name__)

MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class SmoothingConfig:
    """How to smooth (see the module docstring).

    Attributes:
        frac: fraction of a track's frames in each local fit, in (0, 1].
        window: if set, frames in each local fit (overrides ``frac``).
        outlier_std: residuals beyond this many robust standard deviations are outliers.
        min_score: points scoring below this are treated as missing.
        min_points: fewest good points a keypoint needs in a track to be smoothed; also the
            smallest local-fit span.
        min_scale_px: floor of the residual scale, pixels.
    """

    frac: float = 0.1
    window: int | None = None
    outlier_std: float = 3.0
    min_score: float = 0.1
    min_points: int = 5
    min_scale_px: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.frac <= 1:
            raise ConfigError(f"frac must be in (0, 1], got {self.frac}")
        if self.window is not None and self.window < 3:
            raise ConfigError(f"window must be at least 3 frames, got {self.window}")
        if not self.outlier_std > 0:
            raise ConfigError(f"outlier_std must be > 0, got {self.outlier_std}")
        if not 0 <= self.min_score <= 1:
            raise ConfigError(f"min_score must be in [0, 1], got {self.min_score}")
        if self.min_points < 3:
            raise ConfigError(f"min_points must be at least 3, got {self.min_points}")

    def frac_for(self, num_frames: int) -> float:
        """statsmodels' ``frac`` for a series of ``num_frames`` points."""
        span = self.window if self.window is not None else self.frac * num_frames
        span = max(span, self.min_points)
        return float(min(1.0, span / max(num_frames, 1)))


@dataclass
class SmoothingReport:
    """What smoothing did, summed over tracks."""

    tracks: int = 0
    points: int = 0  # keypoint observations (frames x keypoints) in all tracks
    outliers: int = 0  # replaced because they deviated by more than outlier_std
    low_score: int = 0  # replaced because their score was below min_score
    unsmoothed_keypoints: int = 0  # (track, keypoint) series with too few good points
    outlier_mask: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # track id -> (T, K) bool

    def summary(self) -> str:
        return (
            f"{self.tracks} tracks, {self.points} points: {self.outliers} outliers replaced, "
            f"{self.low_score} low-score points filled, {self.unsmoothed_keypoints} keypoint series too short to smooth"
        )


def _lowess(values: np.ndarray, t: np.ndarray, frac: float, robust: bool) -> np.ndarray:
    # delta (statsmodels' speed-up): fits are computed only at points more than delta apart and
    # interpolated between; a tenth of the local window keeps that far below the smoothing scale.
    delta = 0.1 * frac * float(t[-1] - t[0]) if len(t) > 100 else 0.0
    return lowess(values, t, frac=frac, it=3 if robust else 0, delta=delta, is_sorted=True, return_sorted=False)


def _neighbour_residuals(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Deviation of each point from the line through its two neighbours, in noise units, (T,).

    Interior points are compared with the linear interpolation of the points either side, the
    first and last with the extrapolation of their two neighbours. ``v - prediction`` has variance
    ``noise^2 * (1 + a^2 + b^2)`` for prediction weights ``a``, ``b``; dividing by that root makes
    every point's deviation comparable (the ends' extrapolations are noisier than interpolations).
    """
    pred, gain = np.empty_like(v), np.empty_like(v)
    lam = (t[1:-1] - t[:-2]) / (t[2:] - t[:-2])
    pred[1:-1] = (1 - lam) * v[:-2] + lam * v[2:]
    gain[1:-1] = np.sqrt(1 + (1 - lam) ** 2 + lam**2)
    for end, near, far in ((0, 1, 2), (-1, -2, -3)):
        lam_end = (t[end] - t[near]) / (t[near] - t[far])
        pred[end] = (1 + lam_end) * v[near] - lam_end * v[far]
        gain[end] = np.sqrt(1 + (1 + lam_end) ** 2 + lam_end**2)
    return np.abs(v - pred) / gain


def find_outliers(t: np.ndarray, xy: np.ndarray, good: np.ndarray, config: SmoothingConfig) -> np.ndarray:
    """Outliers among the good points of one keypoint series.

    A point is compared with the straight line through its nearest good neighbours in time (the
    design notes' "deviates from its nearest neighbour"). The scale is a robust standard deviation
    of those deviations, ``1.4826 * median(|deviation|)`` (floored at ``min_scale_px``), so outliers
    do not inflate it. An outlier
    also makes its neighbours deviate (by half as much), so only local maxima of the deviation are
    flagged, then removed, and the search repeats until nothing exceeds ``outlier_std`` scales.

    Args:
        t: (T,) frame indices, increasing.
        xy: (T, 2) positions, pixels.
        good: (T,) bool, points to consider (score high enough); at least 3 of them.

    Returns:
        (T,) bool, True for outliers (in x or in y).
    """
    outliers = np.zeros(len(t), dtype=bool)
    candidates = np.flatnonzero(good)
    tg = t[candidates].astype(np.float64)
    for c in range(2):
        flagged = np.zeros(len(candidates), dtype=bool)
        scale = None
        while (~flagged).sum() >= 3:
            keep = np.flatnonzero(~flagged)
            residual = _neighbour_residuals(tg[keep], xy[candidates[keep], c])
            if scale is None:  # from all points: removing outliers must not shrink it
                scale = max(MAD_TO_STD * np.median(residual), config.min_scale_px)
            big = residual > config.outlier_std * scale
            local_max = (residual >= np.r_[residual[1:], 0.0]) & (residual >= np.r_[0.0, residual[:-1]])
            new = big & local_max
            if not new.any():
                break
            flagged[keep[new]] = True
        outliers[candidates[flagged]] = True
    return outliers


def smooth_series(
    t: np.ndarray, xy: np.ndarray, scores: np.ndarray, config: SmoothingConfig
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Smooth one keypoint of one track.

    Args:
        t: (T,) frame indices, strictly increasing.
        xy: (T, 2) positions, pixels.
        scores: (T,) confidences in [0, 1].

    Returns:
        ``(smoothed (T, 2), outliers (T,) bool, smoothed?)``; when fewer than ``min_points`` points
        score at least ``min_score`` the input comes back unchanged and ``smoothed?`` is False.
    """
    good = scores >= config.min_score
    if good.sum() < config.min_points:
        return xy.copy(), np.zeros(len(t), dtype=bool), False
    outliers = find_outliers(t, xy, good, config)
    keep = good & ~outliers
    if keep.sum() < 2:  # everything flagged: nothing trustworthy to interpolate from
        keep = good
    tf = t.astype(np.float64)
    frac = config.frac_for(len(t))
    out = np.empty_like(xy, dtype=np.float64)
    for c in range(2):
        cleaned = np.interp(tf, tf[keep], xy[keep, c])
        out[:, c] = _lowess(cleaned, tf, frac, robust=False)
    return out, outliers, True


def smooth_track(track: Track, config: SmoothingConfig) -> tuple[Track, np.ndarray, int, int]:
    """Smooth every keypoint of one track.

    Returns:
        ``(smoothed track (same frames, original scores), outliers (T, K) bool,
        low-score point count, unsmoothed keypoint count)``.
    """
    kps = track.keypoints
    out = kps.copy()
    outliers = np.zeros(kps.shape[:2], dtype=bool)
    unsmoothed = 0
    for k in range(kps.shape[1]):
        smoothed_xy, outliers[:, k], ok = smooth_series(track.frames, kps[:, k, :2], kps[:, k, 2], config)
        out[:, k, :2] = smoothed_xy
        unsmoothed += int(not ok)
    low_score = int((kps[..., 2] < config.min_score).sum())
    return Track(id=track.id, frames=track.frames.copy(), keypoints=out), outliers, low_score, unsmoothed


def smooth_tracks(tracks: TrackSet, config: SmoothingConfig | None = None) -> tuple[TrackSet, SmoothingReport]:
    """Smooth every track of a :class:`TrackSet` (see the module docstring for the method).

    Returns:
        ``(smoothed TrackSet with the same fps, names, ids and frames, report)``.
    """
    config = config or SmoothingConfig()
    report = SmoothingReport()
    smoothed = []
    for n, track in enumerate(tracks.tracks):
        new, outliers, low_score, unsmoothed = smooth_track(track, config)
        smoothed.append(new)
        report.tracks += 1
        report.points += int(outliers.size)
        report.outliers += int(outliers.sum())
        report.low_score += low_score
        report.unsmoothed_keypoints += unsmoothed
        report.outlier_mask[track.id] = outliers
        if (n + 1) % 20 == 0:
            log.info("smoothed %d/%d tracks", n + 1, len(tracks.tracks))
    return TrackSet(fps=tracks.fps, keypoint_names=tracks.keypoint_names, tracks=smoothed), report
