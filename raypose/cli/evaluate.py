"""Evaluation sub-commands: ``raypose eval`` (OKS mAP of a COCO keypoint results file) and
``raypose predict`` (a checkpoint's detections on images, as a COCO keypoint results file)."""

from __future__ import annotations

import argparse
import json
import math

from raypose.io import check_output_dir

_AREA_LABEL = {"AP": "all", "AP50": "all", "AP75": "all", "APm": "medium", "APl": "large"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the ``raypose`` parser."""
    _register_eval(subparsers)
    _register_predict(subparsers)


def _register_predict(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="run a checkpoint on images and write COCO keypoint results",
        description="Inference with a raypose checkpoint on image files or folders; writes a COCO keypoint "
        "results file (with per-keypoint scores) that `raypose eval` and `raypose analyze` read.",
    )
    p.add_argument("checkpoint", help="raypose checkpoint (.pth) written by training, or a model a study registered "
                   "in MLflow: models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS")
    p.add_argument("images", nargs="+", help="image files or folders of images (.jpg, .jpeg, .png)")
    p.add_argument("--out", required=True, help="COCO results JSON to write")
    p.add_argument("--ann", default=None,
                   help="COCO annotation file whose file_name -> id map gives image ids (default: numeric file "
                   "stems, as in COCO's 000000000139.jpg -> 139)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--score-thresh", type=float, default=0.0, help="drop detections scoring below this")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI of the registry a models:/ checkpoint is in (default $MLFLOW_TRACKING_URI)")
    add_inference_flags(p)
    p.set_defaults(func=_predict)


def add_inference_flags(p: argparse.ArgumentParser) -> None:
    """The inference options (raypose.inference_options) as flags: the flip test on (it helped on
    every measured set), the others off (they did not help on all of them); ``--no-flip-test``
    with none of the others is stock KeypointRCNN. The README's table has the measurements."""
    group = p.add_argument_group("inference options (measured in the README's table)")
    group.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                       help="average the keypoint heatmaps of each image and its mirror (two backbone passes; on by "
                       "default: +0.026 to +0.038 AP on both measured models; --no-flip-test for stock speed)")
    group.add_argument("--rescore", action="store_true",
                       help="score each person by box score x the mean probability of its keypoints")
    group.add_argument("--oks-nms", action="store_true",
                       help="drop a person whose OKS with a better-scored one exceeds 0.9 (duplicates box NMS keeps)")
    group.add_argument("--keypoint-probs", action="store_true",
                       help="keypoint scores as spatial-softmax probabilities instead of torchvision's peak logits")


def inference_options(args: argparse.Namespace):
    from raypose.inference_options import InferenceOptions

    return InferenceOptions(flip_test=args.flip_test, rescore=args.rescore, oks_nms=args.oks_nms,
                            keypoint_probs=args.keypoint_probs)


def _predict(args) -> int:
    from raypose.predict import predict_to_results

    n_images, n_dets = predict_to_results(
        args.checkpoint, args.images, args.out, ann=args.ann, device=args.device,
        batch_size=args.batch_size, score_thresh=args.score_thresh, options=inference_options(args),
        tracking_uri=args.tracking_uri,
    )
    print(f"wrote {n_dets} detections on {n_images} images to {args.out}")
    return 0


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="OKS mAP of COCO keypoint detections against ground truth (pycocotools' numbers)",
        description=(
            "Evaluate a COCO keypoint results file with pycocotools' COCOeval (iouType=keypoints): "
            "the 10 summary numbers, per-keypoint AP and OKS precision-recall curves. Sigmas follow the "
            "ground truth's keypoint count (17 or 23) unless --sigmas is given."
        ),
    )
    p.add_argument("gt", metavar="GT.json", help="COCO keypoint ground-truth annotation file")
    p.add_argument("dets", metavar="DETS.json", help="COCO keypoint results file (a JSON list of detections)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print exactly one JSON object with AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl "
        "(and body_ap, foot_ap for 23 keypoints)",
    )
    p.add_argument(
        "--foot-sigmas",
        choices=["raypose", "wholebody"],
        default="raypose",
        help="sigmas of foot_ap (23 keypoints): raypose's 0.062 each, as in AP, or COCO-WholeBody's foot sigmas",
    )
    p.add_argument(
        "--sigmas",
        type=_parse_sigmas,
        default=None,
        metavar="a,b,...",
        help="comma-separated OKS sigmas, one per keypoint (pycocotools convention, e.g. 0.026 for the nose)",
    )
    p.add_argument(
        "--out", metavar="DIR", default=None, help="write metrics.json and PR/per-keypoint plots here"
    )
    p.add_argument(
        "--slow",
        action="store_true",
        help="run plain pycocotools instead of the (identical) vectorised evaluator",
    )
    p.set_defaults(func=run_eval)


def _parse_sigmas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sigmas must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("--sigmas needs at least one number")
    return values


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``raypose eval``: evaluate, print a table or JSON, optionally write a report."""
    from raypose.evaluation.cocoeval import STAT_NAMES, evaluate_keypoints, write_eval_report
    from raypose.evaluation.plots import EVAL_REPORT_FILES

    if args.out is not None:
        check_output_dir(args.out, inputs=(args.gt, args.dets), writes=EVAL_REPORT_FILES)
    result = evaluate_keypoints(
        args.gt,
        args.dets,
        sigmas=args.sigmas,
        per_keypoint=not args.json or args.out is not None,
        fast=not args.slow,
        foot_sigmas=args.foot_sigmas,
    )
    if args.out is not None:
        paths = write_eval_report(result, args.out)
    if args.json:
        print(json.dumps({**{name: float(result.stats[name]) for name in STAT_NAMES}, **result.parts}))
        return 0
    print(format_summary(result))
    if args.out is not None:
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def format_summary(result) -> str:
    """pycocotools-style summary lines, then a per-keypoint table."""
    lines = [f"{result.num_images} images, {result.num_gt} people, {result.num_dets} detections"]
    for name in ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"):
        kind = "Average Precision  (AP)" if name.startswith("AP") else "Average Recall     (AR)"
        oks = {"50": "0.50", "75": "0.75"}.get(name[2:], "0.50:0.95")
        area = _AREA_LABEL.get("AP" + name[2:], "all")
        lines.append(
            f" {kind} @[ OKS={oks:<9} | area={area:>6s} | maxDets= 20 ] = {result.stats[name]:0.3f}  {name}"
        )
    if result.parts:
        body, foot = result.parts["body_ap"], result.parts["foot_ap"]
        lines.append(f" body_ap = {body:0.3f}  (the 17 COCO points alone, COCO's sigmas: torchvision's scale)")
        lines.append(f" foot_ap = {foot:0.3f}  (the 6 foot points, people who label any)"
                     if foot >= 0 else " foot_ap = -     (no person labels a foot point)")
    if result.per_keypoint:
        lines.append("")
        lines.append(f"{'keypoint':<16} {'AP':>6} {'AP50':>6} {'AP75':>6} {'mean_ks':>8} {'labelled':>8}")
        for kp, values in result.per_keypoint.items():
            ks = values["mean_ks"]
            ks_text = f"{ks:8.3f}" if math.isfinite(ks) else f"{'-':>8}"
            lines.append(
                f"{kp:<16} {values['AP']:6.3f} {values['AP50']:6.3f} {values['AP75']:6.3f} {ks_text} "
                f"{values['num_labelled']:8d}"
            )
    return "\n".join(lines)
