"""``raypose analyze``: error analysis of keypoint detections against ground truth."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from raypose.errors import ConfigError, InputError
from raypose.io import check_output_dir

if TYPE_CHECKING:
    from raypose.analysis.conventions import Convention
    from raypose.analysis.data import AnalysisInput


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``analyze`` to the ``raypose`` parser."""
    p = subparsers.add_parser(
        "analyze",
        help="error analysis of keypoint detections (error types, progressive correction, worst images)",
        description=(
            "Error analysis as Ronchi and Perona (ICCV 2017) define it: classify every keypoint of every "
            "matched detection as good, jitter, inversion, swap or miss; measure the AP gained by correcting "
            "each error type cumulatively (then optimal rescoring, background false positives, false "
            "negatives), and each error type on its own; rank images by an image score (OKS of the matched "
            "detections over people plus false positives' scores; report.html defines it) and render the "
            "worst. Writes DIR/summary.json, DIR/per_detection.json and DIR/report.html (opens from disk, no "
            "server; every file they name is relative to DIR). "
            "--convention coco-analyze reproduces the numbers of coco-analyze, the paper's own code."
        ),
    )
    p.add_argument("gt", metavar="GT.json", help="COCO keypoint ground-truth file (17 or 23 keypoints)")
    p.add_argument("dets", metavar="DETS.json", help="COCO keypoint results file for the same images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument(
        "--images",
        metavar="IMAGES",
        help="folder with the images (file_name from GT.json); without it the gallery draws on blank canvases",
    )
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="raypose checkpoint: also run the oracle-box study (keypoint head on ground-truth boxes); needs --images",
    )
    p.add_argument(
        "--worst", type=int, default=100, metavar="N", help="number of worst images to render (default 100)"
    )
    p.add_argument(
        "--max-listed",
        type=int,
        default=50,
        metavar="N",
        help="background false positives (highest score first) and missed people (largest first) to list "
        "and draw in report.html (default 50 each; all are in summary.json, the false positives also in "
        "per_detection.json)",
    )
    p.add_argument(
        "--convention",
        default="raypose",
        metavar="NAME",
        help="raypose (default: COCO's area range, corrections land on their target ks, one-to-one optimal "
        "score, background = matched at no OKS threshold) or coco-analyze (its numbers exactly: area >= 32^2, "
        "its corrections, max-OKS + soft-NMS score, background per OKS threshold); README lists the differences",
    )
    p.add_argument(
        "--device", default="auto", help="device for --checkpoint: auto (cuda if available), cpu, cuda[:N]"
    )
    p.add_argument(
        "--batch-size", type=int, default=4, help="images per forward pass for --checkpoint (default 4)"
    )
    p.set_defaults(func=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    from raypose.analysis.conventions import convention_for
    from raypose.analysis.data import load_analysis_input
    from raypose.analysis.report import REPORT_FILES, write_report
    from raypose.analysis.summary import compute_analysis

    convention = convention_for(args.convention)  # ConfigError naming the valid ones
    check_output_dir(args.out, inputs=(args.gt, args.dets, args.images, args.checkpoint), writes=REPORT_FILES)
    if args.worst < 0 or args.max_listed < 0:
        raise ConfigError("--worst and --max-listed must be >= 0")
    if args.checkpoint and not args.images:
        raise ConfigError("--checkpoint runs the model on the images, so it needs --images IMAGES")
    inp = load_analysis_input(args.gt, args.dets)
    require_detections_and_people(inp, convention)
    result = compute_analysis(inp, worst=args.worst, convention=convention)
    if args.checkpoint:
        from raypose.analysis.oracle import oracle_study

        result.oracle = oracle_study(
            inp, args.checkpoint, args.images, device=args.device, batch_size=args.batch_size
        )
    paths = write_report(result, args.out, images_dir=args.images, max_listed=args.max_listed)
    _print_summary(result)
    print(f"wrote {paths['summary']} and {paths['report']}")
    return 0


def require_detections_and_people(inp: AnalysisInput, convention: Convention | None = None) -> None:
    """Raises InputError when nothing can be scored: no detection on the ground truth's images, or
    no ground-truth person who counts (pycocotools would report AP -1 and the gains NaN), in the
    convention's area range when one is given."""
    if len(inp.data.dt_img) == 0:
        raise InputError(
            f"{inp.dt_source}: no detections on the images of {inp.gt_source}, so there is nothing to analyse "
            "(check that the detections' image_id and category_id values are the ground truth's)"
        )
    if bool(inp.data.gt_ignore.all()):
        raise InputError(
            f"{inp.gt_source}: no ground-truth person with labelled keypoints (all {len(inp.data.gt_ignore)} "
            "are crowd regions or have num_keypoints 0), so AP is undefined"
        )
    low, high = convention.area_range if convention is not None else (0.0, float("inf"))
    areas = inp.data.gt_areas[~inp.data.gt_ignore]
    if convention is not None and not ((areas >= low) & (areas <= high)).any():
        raise InputError(
            f"{inp.gt_source}: no labelled person has an area in [{low:g}, {high:g}], the {convention.name} "
            "convention's range (coco-analyze ignores people under 32^2 px^2), so AP is undefined; "
            "use --convention raypose"
        )


def _print_summary(result) -> None:
    counts = result.errors.counts()
    total = max(sum(counts.values()), 1)
    print(f"convention: {result.progressive.convention.name}")
    print(
        "keypoints of matched detections: "
        + ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in counts.items())
    )
    print(f"{'step':<16} {'AP':>7} {'gain':>7} {'AP50':>7} {'gain':>7} {'alone':>7}")
    alone = {s.name: s.gain_ap for s in result.progressive.isolated}
    for s in result.progressive.steps:
        extra = f" {alone[s.name]:+7.4f}" if s.name in alone else ""
        print(
            f"{s.label:<16} {s.result.ap:7.4f} {s.gain_ap:+7.4f} {s.result.ap50:7.4f} {s.gain_ap50:+7.4f}{extra}"
        )
    if result.oracle:
        o = result.oracle
        print(
            f"oracle boxes: AP {o['oracle_boxes']['ap']:.4f} vs model detections {o['detections']['ap']:.4f}"
        )
