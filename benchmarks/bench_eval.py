"""Benchmark: keypoint OKS evaluation, plain pycocotools vs raypose's vectorised evaluator.

COCO-val-sized synthetic case: 5,000 images, ~11,000 people, ~50,000 detections, for 17 and 23
keypoints. Checks that both give identical precision/recall arrays and stats, and prints times.

    python benchmarks/bench_eval.py [--images 5000] [--keypoints 17 23] [--repeats 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
from pycocotools.cocoeval import COCOeval

from raypose.evaluation.cocoeval import evaluate_keypoints, load_coco_gt
from raypose.evaluation.fast import FastKeypointCOCOeval
from raypose.evaluation.synthetic import synthetic_keypoint_case
from raypose.schema import schema_for


def _time_core(cls, coco_gt, coco_dt, sigmas):
    """evaluate + accumulate + summarize on prepared COCO objects; returns (seconds, evaluator)."""
    ev = cls(coco_gt, coco_dt, "keypoints")
    ev.params.kpt_oks_sigmas = sigmas
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start, ev


def bench(num_images: int, num_keypoints: int, repeats: int) -> None:
    gt, dets = synthetic_keypoint_case(num_images=num_images, num_keypoints=num_keypoints, seed=num_keypoints)
    sigmas = schema_for(num_keypoints).sigmas
    print(f"K={num_keypoints}: {num_images} images, {len(gt['annotations'])} people, {len(dets)} detections")
    coco_gt = load_coco_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(d) for d in dets])
    times = {}
    evals = {}
    for name, cls in (("pycocotools", COCOeval), ("raypose fast", FastKeypointCOCOeval)):
        runs = [_time_core(cls, load_coco_gt(gt), coco_dt, sigmas) for _ in range(repeats)]
        times[name] = min(t for t, _ in runs)
        evals[name] = runs[-1][1]
    ref, ours = evals["pycocotools"], evals["raypose fast"]
    identical = all(np.array_equal(ref.eval[k], ours.eval[k]) for k in ("precision", "recall", "scores"))
    identical &= np.array_equal(ref.stats, ours.stats)
    for name, seconds in times.items():
        print(f"  {name:<14} evaluate+accumulate+summarize: {seconds:7.2f} s")
    print(
        f"  speed-up x{times['pycocotools'] / times['raypose fast']:.1f}; identical arrays and stats: {identical}"
    )
    print(f"  AP={ours.stats[0]:.4f} AP50={ours.stats[1]:.4f} AR={ours.stats[5]:.4f}")
    for fast in (False, True):
        for per_keypoint in (False, True):
            if not fast and per_keypoint:
                continue
            start = time.perf_counter()
            evaluate_keypoints(gt, dets, fast=fast, per_keypoint=per_keypoint)
            label = f"evaluate_keypoints(fast={fast}, per_keypoint={per_keypoint})"
            print(f"  {label:<52} end to end: {time.perf_counter() - start:7.2f} s")
    if not identical:
        raise SystemExit("MISMATCH between pycocotools and the fast evaluator")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="number of images (default 5000)")
    parser.add_argument("--keypoints", type=int, nargs="+", default=[17, 23], help="keypoint counts to run")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed repeats per evaluator (min is reported)"
    )
    args = parser.parse_args()
    for k in args.keypoints:
        bench(args.images, k, args.repeats)


if __name__ == "__main__":
    main()
