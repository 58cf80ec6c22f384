"""Inference options measured (not a test): AP, body AP, foot AP and seconds per image of stock
KeypointRCNN inference and of each option alone and all together, on fresh synthetic validation
sets big enough to see 1 AP.

Two models, each on its own style of images (``--images`` each, default 500, drawn with a seed no
training or search used, so nothing here was chosen on them):

* ``quickstart``: the quickstart's best checkpoint (``raypose tune search_spaces/quickstart.yaml``,
  ``runs/quickstart/best/checkpoint.pth``) on the quickstart's easier style;
* ``standard``: the tiny model trained on the standard, harder style
  (``raypose train configs/synthetic_standard.yaml``) on that style.

``--checkpoint NAME=PATH`` names a checkpoint; ``--train`` trains the ones not named (about 10 and
30 minutes on 2 CPU cores); without it only the named ones are measured. OKS-NMS drops above OKS
0.9 (MMPose's). Rescoring counts the points above a probability threshold chosen, per model, on
``--select-images`` other images (seed 8) from ``--rescore-thresholds``: MMPose's 0.2 is for
Gaussian-heatmap peaks, and a spatial-softmax peak probability is on another scale. Prints one JSON line per row and the README's
Markdown table (``--out`` writes it too).

    python benchmarks/bench_inference_options.py --checkpoint quickstart=runs/quickstart/best/checkpoint.pth \\
        --checkpoint standard=runs/synthetic-standard/.../checkpoint.pth
    python benchmarks/bench_inference_options.py --train
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from raypose.checkpoint import load_model_from_checkpoint
from raypose.data.synth import SynthStyle, generate_synthetic_dataset, prepare_dataset
from raypose.evaluation.cocoeval import evaluate_keypoints
from raypose.inference_options import InferenceOptions
from raypose.schema import schema_for
from raypose.training.config import load_train_config
from raypose.tuning.final import CANDIDATES, HeldOut, options_row, predict_split

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"quickstart": REPO / "configs" / "synthetic_tiny.yaml", "standard": REPO / "configs" / "synthetic_standard.yaml"}
SEED = 7  # no training set, validation set or search uses it (7: the table; 8: choosing; 9: warm-up)


def train(name: str, folder: Path) -> Path:
    """Train the named model in ``folder`` as a user would; return its best checkpoint."""
    for sub in ("configs", "search_spaces"):
        shutil.copytree(REPO / sub, folder / sub)
    if name == "quickstart":
        subprocess.run([sys.executable, "-m", "raypose", "tune", "search_spaces/quickstart.yaml"], cwd=folder, check=True)
        return folder / "runs" / "quickstart" / "best" / "checkpoint.pth"
    proc = subprocess.run([sys.executable, "-m", "raypose", "train", "configs/synthetic_standard.yaml"], cwd=folder,
                          check=True, capture_output=True, text=True)
    last = proc.stdout.strip().splitlines()[-1]  # "done: RUN; last metrics ...; best checkpoint PATH"
    return Path(last.rsplit("best checkpoint ", 1)[1]) / "checkpoint.pth"


def keypoint_score_auc(ann: Path, dets: list[dict], min_score: float = 0.5) -> dict:
    """How well keypoint scores tell right points from wrong: ROC AUC of the score for "this point
    has ks >= 0.5 with its person" over the labelled points of detections scoring ``min_score`` or
    more, each matched to the person it overlaps best (mean ks); and the share of those points
    a threshold of 0.1 (the video path's default) would drop."""
    gt = json.loads(Path(ann).read_text())
    sigmas = schema_for(23).sigmas
    people: dict[int, list] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0:
            people.setdefault(a["image_id"], []).append((np.array(a["keypoints"], float).reshape(-1, 3), a["area"]))
    scores, good = [], []
    for d in dets:
        if d["score"] < min_score or d["image_id"] not in people:
            continue
        xy = np.array(d["keypoints"], float).reshape(-1, 3)[:, :2]
        best = None
        for kps, area in people[d["image_id"]]:
            labelled = kps[:, 2] > 0
            ks = np.exp(-((xy - kps[:, :2]) ** 2).sum(1) / (2 * sigmas) ** 2 / (area + np.spacing(1)) / 2)
            if best is None or ks[labelled].mean() > best[0]:
                best = (ks[labelled].mean(), ks, labelled)
        _, ks, labelled = best
        scores += list(np.array(d["keypoint_scores"])[labelled])
        good += list(ks[labelled] >= 0.5)
    scores, good = np.array(scores), np.array(good, bool)
    ranks = scores.argsort().argsort() + 1.0  # ties are rare among float scores
    auc = (ranks[good].sum() - good.sum() * (good.sum() + 1) / 2) / max(good.sum() * (~good).sum(), 1)
    return {"points": int(len(scores)), "right": float(good.mean()), "auc": float(auc)}


def images_of(name: str, config, count: int, seed: int, root: Path) -> HeldOut:
    """``count`` fresh validation images of ``name``'s style, drawn with ``seed``."""
    synth = config.data.synth
    style = SynthStyle(image_size=tuple(synth.image_size), max_people=synth.max_people,
                       empty_fraction=synth.empty_fraction, person_height=tuple(synth.person_height),
                       small_fraction=synth.small_fraction, clutter=synth.clutter)
    folder = root / f"{name}-{seed}"
    layout = generate_synthetic_dataset(folder, 0, count, seed=seed, style=style)
    return HeldOut(prepare_dataset(folder)["val"], layout.images("val"), True,
                   f"{count} fresh {name}-style images (seed {seed})")


def choose_rescore_thresh(model, device, config, split: HeldOut, thresholds: list[float]) -> tuple[float, dict]:
    """The rescoring threshold that scores best on ``split`` (images the table does not use)."""
    scores = {}
    for thresh in thresholds:
        dets, _, _ = predict_split(model, device, config, split, InferenceOptions(rescore=True, rescore_thresh=thresh),
                                   f"rescore threshold {thresh}")
        scores[thresh] = evaluate_keypoints(split.ann, dets).stats["AP"]
    best = max(thresholds, key=lambda t: (scores[t], -t))
    return best, scores


def measure(name: str, checkpoint: Path, images: int, select_images: int, thresholds: list[float],
            root: Path) -> list[dict]:
    config = load_train_config(CONFIGS[name])
    split = images_of(name, config, images, SEED, root)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_model_from_checkpoint(checkpoint, device)
    predict_split(model, device, config, images_of(name, config, 8, SEED + 2, root), InferenceOptions(),
                  "warm-up")  # first-call costs (threads, allocator) stay out of the timings
    thresh, sweep = choose_rescore_thresh(model, device, config, images_of(name, config, select_images, SEED + 1, root),
                                          thresholds)
    print(json.dumps({"set": name, "rescore_thresh_chosen": thresh, "AP_by_thresh": sweep}), flush=True)
    rows = []
    for names in CANDIDATES:
        options = InferenceOptions.from_names(names, rescore_thresh=thresh)
        dets, n, seconds = predict_split(model, device, config, split, options, f"{name} {options.label()}")
        row = {"set": name, "images": n, **options_row(options, evaluate_keypoints(split.ann, dets), seconds)}
        if options.rescore:
            row["rescore_thresh"] = thresh
        confident = np.array([d["keypoint_scores"] for d in dets if d["score"] >= 0.5])
        if options.stock and len(confident):  # what tracks.json stores without keypoint_probs
            sigmoid = 1 / (1 + np.exp(-confident))
            row["sigmoid_peak_logit"] = {"median": float(np.median(sigmoid)), "below_0.1": float((sigmoid < 0.1).mean()),
                                         **keypoint_score_auc(split.ann, dets)}
        if options.label() == "keypoint_probs" and len(confident):
            row["keypoint_prob"] = {"median": float(np.median(confident)), "below_0.1": float((confident < 0.1).mean()),
                                    **keypoint_score_auc(split.ann, dets)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| images | inference | AP | change | body AP | foot AP | s/image |", "|---|---|---|---|---|---|---|"]
    stock = {r["set"]: r for r in rows if r["options"] == "stock"}
    for r in rows:
        base = stock[r["set"]]
        change = "-" if r is base else f"{r['AP'] - base['AP']:+.3f}"
        foot = "-" if r["foot_ap"] < 0 else f"{r['foot_ap']:.3f}"
        lines.append(f"| {r['set']} ({r['images']}) | {r['options'].replace('+', ' + ')} | {r['AP']:.3f} | "
                     f"{change} | {r['body_ap']:.3f} | {foot} | {r['s_per_image']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="quickstart=PATH or standard=PATH (repeatable)")
    parser.add_argument("--train", action="store_true", help="train the models not given by --checkpoint")
    parser.add_argument("--images", type=int, default=500, help="validation images per style (default 500)")
    parser.add_argument("--select-images", type=int, default=200,
                        help="other images per style on which the rescoring threshold is chosen (default 200)")
    parser.add_argument("--rescore-thresholds", default="0,0.02,0.05,0.1,0.2",
                        help="rescoring thresholds to choose from (default 0,0.02,0.05,0.1,0.2; MMPose uses 0.2)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    given = {}
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        if name not in CONFIGS or not path:
            parser.error(f"--checkpoint {item!r}: expected quickstart=PATH or standard=PATH")
        given[name] = Path(path)
    if not given and not args.train:
        parser.error("no checkpoint: pass --checkpoint NAME=PATH (quickstart, standard) or --train")
    rows = []
    with tempfile.TemporaryDirectory(prefix="raypose-options-") as tmp:
        for name in CONFIGS:
            if name not in given and not args.train:
                print(f"{name}: skipped (no --checkpoint {name}=PATH; --train trains it)", flush=True)
                continue
            checkpoint = given.get(name) or train(name, Path(tmp) / f"train-{name}")
            rows += measure(name, checkpoint, args.images, args.select_images,
                            [float(t) for t in args.rescore_thresholds.split(",")], Path(tmp))
    text = table(rows)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}\n{text}")
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
