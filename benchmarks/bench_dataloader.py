"""Data loader benchmark on a COCO-sized synthetic annotation file (not a test).

Writes a 23-keypoint annotation file with ``--people`` people (COCO train: ~260k) on ~118k image
entries whose file names point at a small pool of synthetic JPEGs, then measures:

* annotation load time and the memory the numpy arrays take (vs. the process RSS while the
  JSON dicts are alive);
* DataLoader images/s with 0 and 2 workers (batch 8, the training transforms);
* peak RSS of the main process and of the worker processes.

Usage::

    python benchmarks/bench_dataloader.py [--people 260000] [--batches 40] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def write_big_annotations(path: Path, pool: list[dict], num_people: int, seed: int = 0) -> int:
    """A COCO-style file with ``num_people`` people, ~2.2 per image, images drawn from ``pool``."""
    from raypose.schema import COCO23

    rng = np.random.default_rng(seed)
    num_images = int(num_people / 2.2)
    image_of_person = np.sort(rng.integers(0, num_images, num_people))
    pool_index = rng.integers(0, len(pool), num_images)
    images = []
    for i in range(num_images):
        src = pool[pool_index[i]]
        images.append(
            {"id": i + 1, "file_name": src["file_name"], "width": src["width"], "height": src["height"]}
        )
    anns = []
    for p in range(num_people):
        image = images[image_of_person[p]]
        w, h = image["width"], image["height"]
        x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
        bw, bh = rng.uniform(8, w - x0), rng.uniform(8, h - y0)
        kps = np.zeros((23, 3))
        kps[:, 0] = rng.uniform(x0, x0 + bw, 23)
        kps[:, 1] = rng.uniform(y0, y0 + bh, 23)
        kps[:, 2] = rng.integers(0, 3, 23)
        kps[kps[:, 2] == 0] = 0
        anns.append(
            {
                "id": p + 1,
                "image_id": image["id"],
                "category_id": 1,
                "iscrowd": int(rng.random() < 0.01),
                "bbox": [round(x0, 2), round(y0, 2), round(bw, 2), round(bh, 2)],
                "area": round(bw * bh, 2),
                "keypoints": np.round(kps, 2).reshape(-1).tolist(),
                "num_keypoints": int((kps[:, 2] > 0).sum()),
            }
        )
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [COCO23.coco_category(1)]}, f)
    return num_images


def loader_rate(dataset, workers: int, batches: int, batch_size: int = 8) -> float:
    import torch

    from raypose.data.dataset import collate_fn

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_fn,
        persistent_workers=False,
    )
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _ = next(it)
        seen += len(images)
    rate = seen / (time.perf_counter() - start)
    del it, loader
    gc.collect()
    return rate


def measure(ann_path: Path, image_dir: Path, batches: int) -> None:
    """Run in a fresh process, so the writer's dicts do not count in the peak memory figures."""
    import torch  # noqa: F401  (imported before measuring, so its memory is in the baseline)

    from raypose.data.annotations import load_keypoint_annotations
    from raypose.data.dataset import KeypointDataset
    from raypose.data.transforms import build_train_transforms
    from raypose.schema import COCO23

    base = rss_mib()
    t0 = time.perf_counter()
    ann = load_keypoint_annotations(ann_path, expected_num_keypoints=23)
    load_s = time.perf_counter() - t0
    gc.collect()
    after = rss_mib()
    peak_load = peak_mib()
    t0 = time.perf_counter()
    dataset = KeypointDataset(ann, image_dir, train=True, transforms=build_train_transforms(COCO23))
    build_s = time.perf_counter() - t0
    rows = [
        ("people / images in file", f"{ann.num_people} / {ann.num_images}"),
        ("annotation file size", f"{ann_path.stat().st_size / 2**20:.1f} MiB"),
        ("annotation load time (JSON parse + arrays)", f"{load_s:.2f} s"),
        ("numpy arrays (KeypointAnnotations.nbytes)", f"{ann.nbytes() / 2**20:.1f} MiB"),
        ("RSS before load (python + torch)", f"{base:.0f} MiB"),
        ("RSS growth after load (dicts freed)", f"{after - base:.1f} MiB"),
        ("peak RSS during load (JSON dicts alive)", f"{peak_load:.0f} MiB"),
        ("KeypointDataset(train=True) build time", f"{build_s:.2f} s"),
        ("training images in dataset", f"{len(dataset)}"),
    ]
    for workers in (0, 2):
        rate = loader_rate(dataset, workers, batches)
        rows.append((f"DataLoader images/s, {workers} workers, batch 8", f"{rate:.1f}"))
    rows.append(("peak RSS main process", f"{peak_mib():.0f} MiB"))
    rows.append(("peak RSS of a worker (max over workers)", f"{peak_mib(resource.RUSAGE_CHILDREN):.0f} MiB"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=260_000, help="people in the annotation file")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per loader setting")
    parser.add_argument("--pool", type=int, default=16, help="distinct JPEGs the image entries point at")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), help="pool image side range")
    parser.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    parser.add_argument("--measure", nargs=2, metavar=("ANN", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.measure:
        measure(Path(args.measure[0]), Path(args.measure[1]), args.batches)
        return

    from raypose.data.synth import generate_synthetic_dataset

    work = Path(args.workdir or tempfile.mkdtemp(prefix="raypose-bench-"))
    layout = generate_synthetic_dataset(work, args.pool, 0, seed=0, image_size=tuple(args.size))
    pool = json.loads(layout.coco("train").read_text())["images"]
    ann_path = work / "big_foot23.json"
    t0 = time.perf_counter()
    write_big_annotations(ann_path, pool, args.people)
    print(f"wrote {ann_path} in {time.perf_counter() - t0:.1f} s; measuring in a fresh process", flush=True)
    cmd = [sys.executable, __file__, "--measure", str(ann_path), str(layout.images("train"))]
    subprocess.run([*cmd, "--batches", str(args.batches)], check=True)


if __name__ == "__main__":
    main()
