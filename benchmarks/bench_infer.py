"""Inference and in-training evaluation throughput (not a test): how long evaluation holds the GPU.

KeypointRCNN R50-FPN, 23 keypoints, no pretrained weights (an untrained model keeps its 100
detections per image: the heaviest case for decoding and evaluation), on synthetic 800-1333 px
images with 1-5 people each, made in memory. Measures, after one warm-up batch:

* ``predict_loader`` images/s in fp32 and with ``amp`` (float16 backbone, float32 decoding), at
  batch 1 and 4 (``eval_batch_size``), outputs copied to the CPU as evaluation needs them;
* turning the outputs into COCO results and evaluating OKS against the synthetic ground truth
  (``outputs_to_coco_results`` + ``evaluate_keypoints``), seconds per 1,000 images.

Writes ``OUT/bench_infer.json`` and ``OUT/bench_infer.md``. ``--smoke``: tiny sizes, CPU unless CUDA.

    python benchmarks/bench_infer.py --gpu [--images 64] [--out benchmarks/out]
    python benchmarks/bench_infer.py --smoke --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench_train import GPU_SIZES, SMOKE_SIZES, Sizes, _write_atomic, make_batches


def ground_truth(batches: list, width_height: list[tuple[int, int]]) -> dict:
    """A COCO keypoint ground truth (23 keypoints) from the synthetic targets; image ids 1..N."""
    from raypose.schema import schema_for

    images, annotations = [], []
    for image_id, (target, (w, h)) in enumerate(zip((t for _, ts in batches for t in ts), width_height), 1):
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.png"})
        for box, kps in zip(target["boxes"].tolist(), target["keypoints"].tolist()):
            x0, y0, x1, y1 = box
            flat = [c for point in kps for c in point]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0) * 0.6,
                "keypoints": flat, "num_keypoints": sum(1 for point in kps if point[2] > 0),
            })
    names = list(schema_for(23).names)
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": names, "skeleton": []}]}


def run(sizes: Sizes, num_images: int, device) -> dict:
    import torch

    from raypose.evaluation.cocoeval import evaluate_keypoints, outputs_to_coco_results
    from raypose.model import ModelConfig, build_model
    from raypose.training.loop import predict_loader

    torch.manual_seed(0)
    model = build_model(ModelConfig(**sizes.model)).to(device).eval()
    torch.backends.cudnn.benchmark = True
    rows = []
    outputs = ids = None
    for batch in (1, 4):
        data = make_batches(-(-num_images // batch), batch, sizes, seed=5, pin=device.type == "cuda")
        loader = [(images, [{**t, "image_id": torch.tensor(i * batch + j + 1)} for j, t in enumerate(targets)])
                  for i, (images, targets) in enumerate(data)]
        for amp in (False, True):
            predict_loader(model, loader[:1], device, amp=amp)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            outputs, ids = predict_loader(model, loader, device, amp=amp)  # CPU copies: synced
            seconds = time.perf_counter() - start
            precision = "amp (float16 backbone)" if amp else "fp32"
            if amp and device.type != "cuda":
                precision = "fp32 (amp is a no-op on CPU)"
            row = {"batch": batch, "precision": precision,
                   "images": len(ids), "images_per_s": round(len(ids) / seconds, 2),
                   "detections_per_image": round(sum(len(o["scores"]) for o in outputs) / len(outputs), 1)}
            if device.type == "cuda":
                row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
        gt = ground_truth(data, [(int(im.shape[-1]), int(im.shape[-2])) for images, _ in data for im in images])
    start = time.perf_counter()
    results = outputs_to_coco_results(outputs, ids)
    to_coco = time.perf_counter() - start
    evaluation = evaluate_keypoints(gt, results, image_ids=ids, per_keypoint=False)
    total = time.perf_counter() - start
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "model": f"KeypointRCNN {sizes.model['backbone']}-FPN, 23 keypoints, untrained",
        "inference": rows,
        "evaluation": {"images": len(ids), "detections": len(results), "to_coco_s": round(to_coco, 3),
                       "evaluate_s": round(total - to_coco, 3), "seconds_per_1000_images": round(1000 * total / len(ids), 2),
                       "AP": evaluation.stats["AP"]},
    }


def markdown(result: dict) -> str:
    lines = [f"## Inference and evaluation: {result['device']}", "", result["model"], "",
             "| batch | precision | images/s | detections/image | peak GPU GiB |", "|---|---|---|---|---|"]
    for r in result["inference"]:
        lines.append(f"| {r['batch']} | {r['precision']} | {r['images_per_s']} | {r['detections_per_image']} | "
                     f"{r.get('peak_gpu_memory_gib', '-')} |")
    e = result["evaluation"]
    lines += ["", f"Evaluation of {e['images']} images, {e['detections']} detections: to COCO results {e['to_coco_s']} s, "
              f"OKS evaluation {e['evaluate_s']} s ({e['seconds_per_1000_images']} s per 1,000 images)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="R50-FPN at 800-1333 px on one CUDA GPU")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, on CPU unless CUDA is there")
    parser.add_argument("--images", type=int, default=None, help="images per measurement (default 64; smoke 4)")
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out"),
                        help="folder for bench_infer.json and bench_infer.md (default $OUT or benchmarks/out)")
    args = parser.parse_args()
    import torch

    if not (args.gpu or args.smoke):
        sys.exit("give --gpu (one CUDA GPU) or --smoke (tiny, CPU)")
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA device (torch.cuda.is_available() is False); use --smoke on CPU")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = GPU_SIZES if args.gpu and not args.smoke else SMOKE_SIZES
    result = run(sizes, args.images or (64 if sizes is GPU_SIZES else 4), device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "bench_infer.json", json.dumps(result, indent=2))
    _write_atomic(out / "bench_infer.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
