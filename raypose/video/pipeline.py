"""The ``raypose video`` flow: decode, detect, track, smooth, render.

Outputs in ``out_dir``:

* ``tracks.json``: raw tracks (model keypoints as tracked; see :mod:`raypose.video.tracks_io`);
* ``tracks_smoothed.json``: the same tracks after :func:`raypose.video.smoothing.smooth_tracks`;
* ``overlay.mp4``: the video with the smoothed skeletons and track ids drawn;
* ``plots/track<id>_<keypoint>.png``: before/after x(t), y(t) plots for the chosen keypoints of
  the longest tracks;
* ``summary.json``: counts and timings.

Keypoint scores: torchvision's KeypointRCNN scores each keypoint with the peak logit of its
heatmap (unbounded); tracks.json stores ``sigmoid(logit)`` so every score is in [0, 1], or, with
the ``keypoint_probs`` inference option, the spatial-softmax probability of the peak
(:mod:`raypose.inference_options`), which the smoothing's and tracker's thresholds then filter on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from raypose.errors import ConfigError
from raypose.inference_options import InferenceOptions
from raypose.io import write_json_atomic
from raypose.video.io import probe_video, read_frames, write_video
from raypose.video.render import overlay_frames, plot_keypoint_series
from raypose.video.smoothing import SmoothingConfig, smooth_tracks
from raypose.video.tracking import Tracker, TrackerConfig
from raypose.video.tracks_io import TrackSet, save_tracks

log = logging.getLogger(__name__)
# What run_video writes into its folder (the CLI refuses an input at one of them).
VIDEO_FILES = ("tracks.json", "tracks_smoothed.json", "overlay.mp4", "summary.json", "plots/*.png")


@dataclass(frozen=True)
class VideoRunConfig:
    """Everything ``raypose video`` needs besides the input file.

    Attributes:
        checkpoint: raypose checkpoint (.pth) to run.
        out_dir: where the outputs go (created).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        batch_size: frames per forward pass.
        score_thresh: detections scoring below this are ignored.
        max_frames: stop after this many frames (None: whole video).
        plot_keypoints: keypoint names to plot before/after smoothing.
        plot_tracks: plot the this many longest tracks.
        render: write overlay.mp4.
        inference: inference options of the detector (flip test, OKS-NMS, keypoint probabilities...).
    """

    checkpoint: Path
    out_dir: Path
    device: str = "auto"
    batch_size: int = 4
    score_thresh: float = 0.5
    max_frames: int | None = None
    tracker: TrackerConfig = field(default_factory=lambda: TrackerConfig(min_length=3))
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    plot_keypoints: tuple[str, ...] = ("right_knee",)
    plot_tracks: int = 3
    render: bool = True
    inference: InferenceOptions = field(default_factory=InferenceOptions)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.score_thresh <= 1:
            raise ConfigError(f"score_thresh must be in [0, 1], got {self.score_thresh}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, got {self.max_frames}")


@dataclass
class VideoResult:
    """Where the outputs are and how long each stage took (seconds)."""

    tracks: Path
    smoothed: Path
    overlay: Path | None
    plots: list[Path]
    frames: int
    num_tracks: int
    timings: dict[str, float]
    smoothing_summary: str

    @property
    def detect_fps(self) -> float:
        return self.frames / max(self.timings["decode_detect_track"], 1e-9)


def detect_frames(
    model, frames: Iterable[np.ndarray], device, batch_size: int, score_thresh: float,
    options: InferenceOptions | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Run the model on frames (H, W, 3) uint8 RGB in batches, with inference ``options``.

    Yields:
        Per frame, in order: ``keypoints`` (N, K, 3) as (x, y, score) and ``boxes`` (N, 4) xyxy,
        for detections scoring at least ``score_thresh``. The score is sigmoid(keypoint logit),
        or the keypoint's probability with ``options.keypoint_probs``.
    """
    import torch

    from raypose.inference import batched, predict_images

    for batch in batched(frames, batch_size):
        tensors = [torch.from_numpy(f).permute(2, 0, 1).float().div_(255.0) for f in batch]
        for out in predict_images(model, tensors, device, batch_size, options):
            keep = out["scores"] >= score_thresh
            kps = out["keypoints"][keep].astype(np.float64)
            scores = out["keypoints_scores"][keep].astype(np.float64)
            kps[..., 2] = scores if options is not None and options.keypoint_probs else 1.0 / (1.0 + np.exp(-scores))
            yield kps, out["boxes"][keep].astype(np.float64)


def _plots(raw: TrackSet, smoothed: TrackSet, report, config: VideoRunConfig) -> list[Path]:
    longest = sorted(raw.tracks, key=lambda t: -len(t))[: config.plot_tracks]
    paths = []
    for track in longest:
        for name in config.plot_keypoints:
            path = config.out_dir / "plots" / f"track{track.id}_{name}.png"
            paths.append(plot_keypoint_series(
                raw, smoothed, track.id, name, path, report.outlier_mask.get(track.id), config.smoothing.min_score
            ))
    return paths


def run_video(input_path: str | Path, config: VideoRunConfig) -> VideoResult:
    """Decode ``input_path``, detect and track people, smooth, render (see the module docstring).

    Raises:
        InputError: the video cannot be read. WeightsError: the checkpoint cannot be loaded.
        ConfigError: a plot keypoint is not in the checkpoint's schema, or CUDA is missing.
    """
    from raypose.checkpoint import load_model_from_checkpoint
    from raypose.inference import resolve_device

    info = probe_video(input_path)  # fail on a bad video before loading a model
    device = resolve_device(config.device)
    model, model_config = load_model_from_checkpoint(config.checkpoint, device)
    schema = model_config.schema
    unknown = [n for n in config.plot_keypoints if n not in schema.names]
    if unknown:
        raise ConfigError(f"plot keypoint(s) {unknown} not in the model's keypoints: {', '.join(schema.names)}")
    config.out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    tracker = Tracker(schema.sigmas, config.tracker)
    frames = read_frames(input_path, config.max_frames)
    count = 0
    for count, (kps, boxes) in enumerate(detect_frames(model, frames, device, config.batch_size, config.score_thresh, config.inference), 1):
        tracker.update(count - 1, kps, boxes)
        if count % 50 == 0:
            log.info("frame %d%s: %.1f frames/s", count, f"/{info.num_frames}" if info.num_frames else "",
                     count / (time.perf_counter() - start))
    raw = TrackSet(fps=info.fps, keypoint_names=schema.names, tracks=tracker.finish())
    timings["decode_detect_track"] = time.perf_counter() - start
    tracks_path = save_tracks(config.out_dir / "tracks.json", raw)

    start = time.perf_counter()
    smoothed, report = smooth_tracks(raw, config.smoothing)
    timings["smooth"] = time.perf_counter() - start
    smoothed_path = save_tracks(config.out_dir / "tracks_smoothed.json", smoothed)
    log.info("smoothing: %s", report.summary())

    overlay = None
    start = time.perf_counter()
    if config.render:
        drawn = overlay_frames(read_frames(input_path, config.max_frames), smoothed, schema, config.smoothing.min_score)
        overlay = write_video(config.out_dir / "overlay.mp4", drawn, info.fps)
    plots = _plots(raw, smoothed, report, config)
    timings["render"] = time.perf_counter() - start

    result = VideoResult(tracks_path, smoothed_path, overlay, plots, count, len(raw.tracks), timings, report.summary())
    _write_summary(result, config, str(device))
    return result


def _write_summary(result: VideoResult, config: VideoRunConfig, device: str) -> None:
    write_json_atomic(
        config.out_dir / "summary.json",
        {
            "frames": result.frames,
            "tracks": result.num_tracks,
            "device": device,
            "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
            "detect_fps": round(result.detect_fps, 2),
            "smoothing": result.smoothing_summary,
            "tracker": asdict(config.tracker),
            "smoothing_config": asdict(config.smoothing),
        },
        indent=2,
    )
