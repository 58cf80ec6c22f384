"""Benchmark: `raypose eval` end to end against faster-coco-eval and pycocotools, and its parts.

COCO-val-sized synthetic case (default 5,000 images, 23 keypoints, ~11k people, ~58k detections)
written to JSON files. In one run it measures, best of ``--repeats``:

* end to end, each tool in a fresh process reading the two files: ``raypose eval --json``,
  faster-coco-eval (optional: ``pip install 'raypose[bench]'``; the row says so when it is
  missing), plain pycocotools, and ``raypose eval --json --slow``; all stats must be identical;
* the levers: JSON parsing (stdlib / orjson / orjson with the GC paused), the results loader
  (pycocotools' ``loadRes`` / raypose's), OKS of all same-image pairs / of the pairs that can
  match, matching and accumulation;
* the in-training evaluation: ``evaluate_in_memory`` on output arrays with the ground truth
  already cached (what every epoch after the first pays).

    python benchmarks/bench_eval.py [--images 5000] [--keypoints 23] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from raypose.evaluation import fast, inputs
from raypose.evaluation.cocoeval import STAT_NAMES, evaluate_in_memory, load_coco_gt, outputs_to_arrays
from raypose.evaluation.synthetic import synthetic_keypoint_case
from raypose.io import load_json
from raypose.schema import schema_for

FASTER_COCO_EVAL = """
import json, sys
import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
gt = COCO(sys.argv[1])
ev = COCOeval_faster(gt, gt.loadRes(sys.argv[2]), "keypoints", print_function=lambda *a, **k: None,
                     kpt_oks_sigmas=np.array(json.loads(sys.argv[3])))
ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(v) for v in ev.stats[:10]]))
"""

PYCOCOTOOLS = """
import contextlib, io, json, sys
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    ev = COCOeval(gt, gt.loadRes(sys.argv[2]), "keypoints")
    ev.params.kpt_oks_sigmas = np.array(json.loads(sys.argv[3]))
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(v) for v in ev.stats]))
"""


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def _process(argv: list[str]) -> tuple[list[float], float]:
    """Run one tool; returns its stats and the CPU seconds (user + system) the process used."""
    # Bytecode as an installed package has it (pip compiles on install): a session environment
    # with PYTHONDONTWRITEBYTECODE=1 would make raypose compile its sources on every run.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    return ([stats[n] for n in STAT_NAMES] if isinstance(stats, dict) else stats), cpu


def has_faster_coco_eval() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def end_to_end(gt_path: Path, dets_path: Path, sigmas: np.ndarray, repeats: int) -> dict[str, float]:
    """Seconds per tool (fresh process each), after checking every tool's stats are identical."""
    sig = json.dumps(sigmas.tolist())
    tools = {
        "raypose eval --json": [sys.executable, "-m", "raypose.cli.main", "eval", str(gt_path), str(dets_path), "--json"],
        "faster-coco-eval": [sys.executable, "-c", FASTER_COCO_EVAL, str(gt_path), str(dets_path), sig],
        "pycocotools": [sys.executable, "-c", PYCOCOTOOLS, str(gt_path), str(dets_path), sig],
        "raypose eval --json --slow": [
            sys.executable, "-m", "raypose.cli.main", "eval", str(gt_path), str(dets_path), "--json", "--slow",
        ],
    }  # fmt: skip
    if not has_faster_coco_eval():
        print("  faster-coco-eval is NOT installed: pip install 'raypose[bench]' to compare against it")
        del tools["faster-coco-eval"]
    _process(tools["raypose eval --json"])  # warm-up: raypose's bytecode written, files in the page cache
    times: dict[str, float] = {name: float("inf") for name in tools}
    cpu: dict[str, float] = dict(times)
    stats = {}
    for _ in range(repeats):  # interleaved, so a busy spell on a shared machine hits every tool
        for name, argv in tools.items():
            seconds, (stats[name], cpu_seconds) = _best(lambda argv=argv: _process(argv), 1)
            times[name] = min(times[name], seconds)
            cpu[name] = min(cpu[name], cpu_seconds)
    reference = stats["pycocotools"]
    for name, values in stats.items():
        if values != reference:
            raise SystemExit(f"MISMATCH: {name} gives {values}, pycocotools {reference}")
    print(f"  end to end (fresh process, best of {repeats}); stats identical for all: {reference[:3]} ...")
    print("    (CPU = user + system seconds of the process: steadier than wall time on a shared machine)")
    for name, seconds in times.items():
        print(f"    {name:<28} {seconds:6.2f} s wall  {cpu[name]:6.2f} s CPU")
    if "faster-coco-eval" in cpu:
        print(f"    CPU: raypose eval vs faster-coco-eval x{cpu['faster-coco-eval'] / cpu['raypose eval --json']:.2f}")
    if "faster-coco-eval" in times:
        print(f"    wall: raypose eval vs faster-coco-eval: x{times['faster-coco-eval'] / times['raypose eval --json']:.2f}")
    print(f"    wall: raypose eval vs pycocotools:      x{times['pycocotools'] / times['raypose eval --json']:.2f}")
    return times


def _stdlib_json(path: Path):
    with open(path) as f:
        return json.load(f)


def _orjson_gc_on(path: Path):
    import orjson

    return orjson.loads(path.read_bytes())


def levers(gt_path: Path, dets_path: Path, sigmas: np.ndarray, repeats: int) -> None:
    """Each stage, the way pycocotools / raypose before did it against the way raypose does it now."""
    print(f"  levers (in process, best of {repeats})")
    rows = [
        ("JSON parse, results file: stdlib json", lambda: _stdlib_json(dets_path)),
        ("JSON parse, results file: orjson", lambda: _orjson_gc_on(dets_path)),
        ("JSON parse, results file: orjson, GC paused", lambda: load_json(dets_path)),
    ]
    for label, fn in rows:
        gc.collect()
        print(f"    {label:<52} {_best(fn, repeats)[0]:6.3f} s")
    dets = load_json(dets_path)
    coco_gt = load_coco_gt(gt_path)
    with contextlib.redirect_stdout(io.StringIO()):
        seconds, _ = _best(lambda: coco_gt.loadRes([dict(d) for d in dets]), repeats)
    print(f"    {'results loader: pycocotools loadRes':<52} {seconds:6.3f} s")
    truth = inputs.ground_truth(gt_path)
    seconds, found = _best(lambda: inputs.detections_from_list(dets, truth, str(dets_path)), repeats)
    print(f"    {'results loader: raypose (checks + arrays)':<52} {seconds:6.3f} s")
    seconds, _ = _best(lambda: inputs.ground_truth(gt_path), repeats)
    print(f"    {'ground truth: read + check + arrays':<52} {seconds:6.3f} s")
    data, _ = inputs.category_data(truth, found)
    seconds, every = _best(lambda: fast.pair_oks(data, sigmas), repeats)
    print(f"    {'OKS, every same-image pair (' + str(len(every[0])) + ')':<52} {seconds:6.3f} s")
    seconds, pairs = _best(lambda: fast.pair_oks(data, sigmas, min_oks=0.5), repeats)
    print(f"    {'OKS, pairs that can match (' + str(len(pairs[0])) + ')':<52} {seconds:6.3f} s")
    area_rngs = np.array([[0, 1e10], [32**2, 96**2], [96**2, 1e10]], dtype=np.float64)
    thresholds = np.linspace(0.5, 0.95, 10)
    seconds, result = _best(lambda: fast.match(data, pairs, area_rngs, thresholds), repeats)
    print(f"    {'greedy matching, 3 areas x 10 thresholds':<52} {seconds:6.3f} s")
    rec = np.linspace(0, 1, 101)
    seconds, _ = _best(lambda: fast.accumulate(data, result, rec, [20]), repeats)
    print(f"    {'accumulate':<52} {seconds:6.3f} s")


def in_training(gt_path: Path, dets: list[dict], gt: dict, repeats: int) -> float:
    """evaluate_in_memory on output arrays (two ranks), ground truth cached after the first call."""
    num_kpts = len(dets[0]["keypoints"]) // 3
    by_image: dict[int, list[dict]] = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    outputs, ids = [], []
    for img in gt["images"]:
        mine = by_image.get(img["id"], [])
        boxes = np.array([d["bbox"] for d in mine], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        kpts = np.array([d["keypoints"] for d in mine], dtype=np.float64).reshape(len(mine), num_kpts, 3)
        outputs.append({"boxes": boxes, "scores": np.array([d["score"] for d in mine]), "keypoints": kpts})
        ids.append(img["id"])
    evaluate_in_memory(gt_path, [outputs_to_arrays(outputs[:1], ids[:1])])  # caches the ground truth

    def epoch():
        parts = [outputs_to_arrays(outputs[r::2], ids[r::2]) for r in range(2)]
        return evaluate_in_memory(gt_path, parts, image_ids=ids)

    seconds, result = _best(epoch, repeats)
    print(f"  in-training evaluation (outputs_to_arrays + evaluate_in_memory, GT cached): {seconds:6.3f} s")
    print(f"    AP {result.stats['AP']:.4f} on {result.num_images} images, {result.num_dets} detections")
    return seconds


def bench(num_images: int, num_keypoints: int, repeats: int) -> None:
    gt, dets = synthetic_keypoint_case(
        num_images=num_images, num_keypoints=num_keypoints, seed=num_keypoints, dets_per_image=11.7
    )
    sigmas = schema_for(num_keypoints).sigmas
    print(f"K={num_keypoints}: {num_images} images, {len(gt['annotations'])} people, {len(dets)} detections")
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dets_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        dets_path.write_text(json.dumps(dets))
        end_to_end(gt_path, dets_path, sigmas, repeats)
        levers(gt_path, dets_path, sigmas, repeats)
        in_training(gt_path, dets, gt, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="number of images (default 5000)")
    parser.add_argument("--keypoints", type=int, nargs="+", default=[23], help="keypoint counts to run (17, 23)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per measurement (best is reported)")
    args = parser.parse_args()
    for k in args.keypoints:
        bench(args.images, k, args.repeats)


if __name__ == "__main__":
    main()
