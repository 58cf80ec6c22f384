"""Video sub-commands: ``raypose video``, ``raypose smooth``, ``raypose video-synth``."""

from __future__ import annotations

import argparse
from pathlib import Path

from raypose.cli.evaluate import add_inference_flags, inference_options
from raypose.io import check_output_dir, check_output_file

SMOOTH_HELP = {
    "frac": "fraction of a track's frames in each LOWESS local fit, in (0, 1] (default 0.1)",
    "window": "frames in each LOWESS local fit; overrides --frac with a fixed span (better for long videos)",
    "outlier_std": (
        "a point deviating from the line through its neighbours in time by more than K robust "
        "standard deviations is an outlier and is replaced by interpolation (default 3)"
    ),
    "min_score": "keypoints scoring below this are treated as missing and filled by interpolation (default 0.1)",
}


def _add_smoothing_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("smoothing")
    g.add_argument("--frac", type=float, default=0.1, metavar="F", help=SMOOTH_HELP["frac"])
    g.add_argument("--window", type=int, default=None, metavar="FRAMES", help=SMOOTH_HELP["window"])
    g.add_argument("--outlier-std", type=float, default=3.0, metavar="K", help=SMOOTH_HELP["outlier_std"])
    g.add_argument("--min-score", type=float, default=0.1, metavar="S", help=SMOOTH_HELP["min_score"])


def _smoothing_config(args: argparse.Namespace):
    from raypose.video.smoothing import SmoothingConfig

    return SmoothingConfig(frac=args.frac, window=args.window, outlier_std=args.outlier_std, min_score=args.min_score)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``video``, ``smooth`` and ``video-synth`` to the ``raypose`` parser."""
    p = subparsers.add_parser(
        "video",
        help="track people through a video, smooth their keypoints and render an overlay",
        description=(
            "Decode INPUT, run the model on batches of frames, track people across frames (OKS or box "
            "IoU matching with constant-velocity prediction; births, deaths and short gaps), write "
            "OUT/tracks.json, smooth it (OUT/tracks_smoothed.json), render OUT/overlay.mp4 with skeletons "
            "and track ids, and plot x/y over time before and after smoothing (OUT/plots/)."
        ),
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="video file (anything FFmpeg decodes: .mp4, .avi, ...)")
    p.add_argument("--checkpoint", type=Path, required=True, help="raypose checkpoint (.pth) to run")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N (default auto)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default 4)")
    p.add_argument("--score-thresh", type=float, default=0.5, help="ignore detections scoring below this (default 0.5)")
    p.add_argument("--max-frames", type=int, default=None, help="process only the first N frames")
    add_inference_flags(p)
    t = p.add_argument_group("tracking")
    t.add_argument("--match", choices=["oks", "iou"], default="oks", help="similarity for matching (default oks)")
    t.add_argument("--min-similarity", type=float, default=0.2, help="smallest OKS/IoU accepted as a match (default 0.2)")
    t.add_argument("--max-gap", type=int, default=10, help="frames a person may go unseen and keep their id (default 10)")
    t.add_argument("--min-track-length", type=int, default=3, help="drop tracks seen in fewer frames (default 3)")
    _add_smoothing_options(p)
    p.add_argument("--plot-keypoints", default="right_knee",
                   help="comma-separated keypoint names to plot before/after smoothing (default right_knee)")
    p.add_argument("--plot-tracks", type=int, default=3, help="plot this many of the longest tracks (default 3)")
    p.add_argument("--no-render", action="store_true", help="skip overlay.mp4")
    p.set_defaults(func=video_command)

    s = subparsers.add_parser(
        "smooth",
        help="LOWESS-smooth a tracks.json, replacing outliers and low-confidence points",
        description=(
            "Smooth each keypoint coordinate of each track with LOWESS (statsmodels) over the frame index. "
            "Points scoring below --min-score are missing; points deviating by more than --outlier-std robust "
            "standard deviations are outliers; both are replaced by interpolation before smoothing. Frames "
            "where a track is absent are not invented; scores are kept. Written atomically."
        ),
    )
    s.add_argument("tracks", type=Path, metavar="TRACKS.json", help="tracks file to smooth")
    s.add_argument("--out", type=Path, required=True, help="smoothed tracks file to write")
    _add_smoothing_options(s)
    s.set_defaults(func=smooth_command)

    g = subparsers.add_parser(
        "video-synth",
        help="write a synthetic video of walking figures with ground truth, for demos and tests",
        description=(
            "Write OUT/synth.mp4 (figures crossing paths and passing behind a pillar), OUT/ground_truth.json "
            "(exact paths, tracks.json format) and OUT/detections.json (jittered detections with outliers, "
            "grouped by true person: input for `raypose smooth`)."
        ),
    )
    g.add_argument("--out", type=Path, required=True, help="output folder (created)")
    g.add_argument("--frames", type=int, default=80, help="number of frames (default 80)")
    g.add_argument("--width", type=int, default=320, help="frame width in pixels (default 320)")
    g.add_argument("--height", type=int, default=240, help="frame height in pixels (default 240)")
    g.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    g.add_argument("--people", type=int, default=2, help="number of people (default 2)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.set_defaults(func=synth_command)


def video_command(args: argparse.Namespace) -> int:
    from raypose.video.pipeline import VIDEO_FILES, VideoRunConfig, run_video
    from raypose.video.tracking import TrackerConfig

    check_output_dir(args.out, inputs=(args.input, args.checkpoint), writes=VIDEO_FILES)
    config = VideoRunConfig(
        checkpoint=args.checkpoint,
        out_dir=args.out,
        device=args.device,
        batch_size=args.batch_size,
        score_thresh=args.score_thresh,
        max_frames=args.max_frames,
        tracker=TrackerConfig(
            match=args.match, min_similarity=args.min_similarity, max_gap=args.max_gap,
            min_length=args.min_track_length,
        ),
        smoothing=_smoothing_config(args),
        plot_keypoints=tuple(n.strip() for n in args.plot_keypoints.split(",") if n.strip()),
        plot_tracks=args.plot_tracks,
        render=not args.no_render,
        inference=inference_options(args),
    )
    result = run_video(args.input, config)
    print(f"{result.frames} frames, {result.num_tracks} tracks, {result.detect_fps:.2f} frames/s (decode+detect+track)")
    print(f"smoothing: {result.smoothing_summary}")
    print(f"wrote {result.tracks}, {result.smoothed}" + (f", {result.overlay}" if result.overlay else ""))
    return 0


def smooth_command(args: argparse.Namespace) -> int:
    from raypose.video.smoothing import smooth_tracks
    from raypose.video.tracks_io import load_tracks, save_tracks

    check_output_file(args.out, inputs=(args.tracks,))
    config = _smoothing_config(args)
    tracks = load_tracks(args.tracks)
    smoothed, report = smooth_tracks(tracks, config)
    save_tracks(args.out, smoothed)
    print(f"smoothed {report.summary()}")
    print(f"wrote {args.out}")
    return 0


def synth_command(args: argparse.Namespace) -> int:
    from raypose.video.io import write_video
    from raypose.video.synth_video import SynthVideoConfig, generate_synthetic_video
    from raypose.video.tracks_io import save_tracks

    check_output_dir(args.out)
    video = generate_synthetic_video(
        SynthVideoConfig(num_frames=args.frames, width=args.width, height=args.height, fps=args.fps,
                         num_people=args.people, seed=args.seed)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_video(args.out / "synth.mp4", video.frames, video.fps)
    save_tracks(args.out / "ground_truth.json", video.ground_truth_tracks())
    save_tracks(args.out / "detections.json", video.detection_tracks())
    print(f"wrote {args.out / 'synth.mp4'} ({args.frames} frames), ground_truth.json, detections.json")
    return 0
