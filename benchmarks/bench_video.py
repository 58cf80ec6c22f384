"""Video benchmarks: smoothing throughput and end-to-end ``raypose video`` frames per second.

    python benchmarks/bench_video.py                      # CPU, tiny ResNet-18 model
    python benchmarks/bench_video.py --model resnet50 --device cuda --frames 200

* smoothing: frames per second of :func:`smooth_tracks` on one person with 23 keypoints
  (a synthetic noisy track of ``--smooth-frames`` frames);
* end to end: decode + detect + track, then smooth, then render, on a synthetic video of
  ``--frames`` frames at ``--width`` x ``--height``, with an untrained model of the chosen backbone
  (weights do not change the cost of a forward pass much; the detections per frame are capped).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raypose.checkpoint import save_checkpoint
from raypose.model import ModelConfig, build_model
from raypose.schema import COCO23
from raypose.video.io import write_video
from raypose.video.pipeline import VideoRunConfig, run_video
from raypose.video.smoothing import SmoothingConfig, smooth_tracks
from raypose.video.synth_video import SynthVideoConfig, generate_synthetic_video
from raypose.video.tracking import TrackerConfig
from raypose.video.tracks_io import Track, TrackSet

MODELS = {
    "tiny": dict(backbone="resnet18", min_size=128, max_size=192, keypoint_head_channels=[64] * 4, box_head_size=256,
                 box_batch_size_per_image=64, rpn_post_nms_top_n_train=300),
    "resnet50": dict(backbone="resnet50", min_size=[800], max_size=1333),
}


def bench_smoothing(num_frames: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(num_frames, dtype=float)
    path = np.stack([100 + 0.5 * t, 200 + 20 * np.sin(t / 25)], axis=1)
    kps = np.empty((num_frames, 23, 3))
    kps[..., :2] = path[:, None, :] + rng.normal(0, 2, (num_frames, 23, 2)) + rng.uniform(-50, 50, (1, 23, 2))
    kps[..., 2] = rng.uniform(0.5, 1, (num_frames, 23))
    spikes = rng.random((num_frames, 23)) < 0.03
    kps[spikes, 0] += 30
    tracks = TrackSet(fps=25.0, keypoint_names=COCO23.names, tracks=[Track(1, np.arange(num_frames), kps)])
    results = {}
    for name, config in (("frac=0.1", SmoothingConfig()), ("window=15", SmoothingConfig(window=15))):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            smooth_tracks(tracks, config)
            times.append(time.perf_counter() - start)
        results[name] = {"frames": num_frames, "best_s": round(min(times), 4), "fps": round(num_frames / min(times), 1)}
    return results


def bench_end_to_end(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    config = ModelConfig(**MODELS[args.model], weights=None, backbone_weights=None, box_score_thresh=0.0,
                         box_detections_per_img=args.detections)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = save_checkpoint(tmp / "model.pth", build_model(config), config)
        video = generate_synthetic_video(SynthVideoConfig(num_frames=args.frames, width=args.width, height=args.height))
        mp4 = write_video(tmp / "in.mp4", video.frames, video.fps)
        run_config = VideoRunConfig(checkpoint=ckpt, out_dir=tmp / "out", device=args.device, batch_size=args.batch_size,
                                    score_thresh=0.0, tracker=TrackerConfig(min_length=1))
        start = time.perf_counter()
        result = run_video(mp4, run_config)
        total = time.perf_counter() - start
    return {
        "model": args.model, "device": args.device, "frames": result.frames, "size": f"{args.width}x{args.height}",
        "batch_size": args.batch_size, "detections_per_frame": args.detections,
        "decode_detect_track_fps": round(result.detect_fps, 2),
        "end_to_end_fps": round(result.frames / total, 2),
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()}, "total_s": round(total, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="tiny", help="model size (default tiny)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--frames", type=int, default=20, help="video frames for the end-to-end run (default 20)")
    p.add_argument("--width", type=int, default=320, help="frame width (default 320)")
    p.add_argument("--height", type=int, default=240, help="frame height (default 240)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default 4)")
    p.add_argument("--detections", type=int, default=5, help="detections kept per frame (default 5)")
    p.add_argument("--smooth-frames", type=int, default=1000, help="frames in the smoothing benchmark (default 1000)")
    p.add_argument("--repeats", type=int, default=3, help="smoothing repeats, best kept (default 3)")
    p.add_argument("--skip-end-to-end", action="store_true", help="only the smoothing benchmark")
    args = p.parse_args()
    report = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
              "smoothing": bench_smoothing(args.smooth_frames, args.repeats)}
    if not args.skip_end_to_end:
        report["end_to_end"] = bench_end_to_end(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
