"""Looking at a keypoint data set: summary statistics, augmented previews, and a label check.

* :func:`write_stats` — images, people, people per image, per-keypoint labelled / visible
  fractions and box sizes, as PNG plots and ``summary.json``;
* :func:`write_samples` — images with skeletons drawn after the training augmentations;
* :func:`check_annotations` — missing labels, keypoints outside their box or image, bad
  visibility values, empty or negative boxes, zero areas (OKS divides by the area), bad image
  sizes, unreadable image files and structural problems, without stopping at the first.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raypose.data.annotations import (
    FileProblem,
    KeypointAnnotations,
    keypoint_file_problems,
    load_keypoint_annotations,
)
from raypose.io import atomic_path, load_json, save_png, write_json_atomic
from raypose.schema import KeypointSchema, schema_for

logger = logging.getLogger(__name__)

# COCO's area ranges for small / medium / large objects (pixels²).
AREA_RANGES = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, math.inf)}


def _schema(num_keypoints: int) -> KeypointSchema | None:
    try:
        return schema_for(num_keypoints)
    except ValueError:
        return None


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    qs = np.percentile(values, [0, 5, 25, 50, 75, 95, 100])
    return dict(zip(("min", "p5", "p25", "median", "p75", "p95", "max"), (round(float(q), 2) for q in qs)))


def dataset_stats(ann: KeypointAnnotations) -> dict[str, Any]:
    """Summary statistics of a keypoint file (crowd regions are counted apart, not as people)."""
    people = ~ann.iscrowd
    image_rows = np.repeat(np.arange(ann.num_images), np.diff(ann.image_offsets))
    per_image = np.bincount(image_rows[people], minlength=ann.num_images)
    kps = ann.keypoints[people]
    labelled = kps[..., 2] > 0
    names = (
        _schema(ann.num_keypoints).names
        if _schema(ann.num_keypoints)
        else [f"kp{k}" for k in range(ann.num_keypoints)]
    )
    n_people = max(1, int(people.sum()))
    boxes = ann.boxes_xywh[people]
    areas = ann.areas[people]
    return {
        "source": ann.source,
        "images": ann.num_images,
        "people": int(people.sum()),
        "crowd_regions": int(ann.iscrowd.sum()),
        "people_with_keypoints": int(labelled.any(axis=1).sum()),
        "images_without_people": int((per_image == 0).sum()),
        "people_per_image": {
            "mean": round(float(per_image.mean()), 3) if ann.num_images else 0.0,
            "histogram": {int(k): int(v) for k, v in sorted(Counter(per_image.tolist()).items())},
        },
        "labelled_keypoints_per_person": _percentiles(labelled.sum(axis=1)),
        "keypoints": {
            name: {
                "labelled_fraction": round(float(labelled[:, k].sum()) / n_people, 4),
                "visible_fraction": round(float((kps[:, k, 2] == 2).sum()) / n_people, 4),
            }
            for k, name in enumerate(names)
        },
        "box_width": _percentiles(boxes[:, 2]),
        "box_height": _percentiles(boxes[:, 3]),
        "box_sqrt_area": _percentiles(np.sqrt(np.maximum(areas, 0))),
        "area_ranges": {
            name: int(((areas >= low) & (areas < high)).sum()) for name, (low, high) in AREA_RANGES.items()
        },
    }


def _save_figure(fig, path: Path) -> Path:
    return save_png(fig, path, bbox_inches="tight")


def _plot_stats(ann: KeypointAnnotations, summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    hist = summary["people_per_image"]["histogram"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(hist), list(hist.values()), color="tab:blue")
    ax.set(xlabel="people per image", ylabel="images", title=f"People per image ({summary['images']} images)")
    written.append(_save_figure(fig, out_dir / "people_per_image.png"))
    plt.close(fig)

    names = list(summary["keypoints"])
    labelled = [summary["keypoints"][n]["labelled_fraction"] for n in names]
    visible = [summary["keypoints"][n]["visible_fraction"] for n in names]
    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, labelled, width=0.4, label="labelled (v>0)")
    ax.bar(x + 0.2, visible, width=0.4, label="visible (v=2)")
    ax.set_xticks(x, names, rotation=70, ha="right", fontsize=8)
    ax.set(ylabel="fraction of people", ylim=(0, 1), title="Per-keypoint labelled and visible fractions")
    ax.legend()
    written.append(_save_figure(fig, out_dir / "keypoint_fractions.png"))
    plt.close(fig)

    people = ~ann.iscrowd
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sqrt_area = np.sqrt(np.maximum(ann.areas[people], 0))
    axes[0].hist(sqrt_area, bins=40, color="tab:green")
    for edge in (32, 96):
        axes[0].axvline(edge, color="k", linestyle="--", linewidth=1)
    axes[0].set(xlabel="sqrt(area) [px]", ylabel="people", title="Person size (COCO small/medium/large)")
    boxes = ann.boxes_xywh[people]
    axes[1].scatter(boxes[:, 2], boxes[:, 3], s=3, alpha=0.4)
    axes[1].set(xlabel="box width [px]", ylabel="box height [px]", title="Box sizes")
    written.append(_save_figure(fig, out_dir / "box_sizes.png"))
    plt.close(fig)
    return written


# What write_stats and write_samples write into their folder (the CLI refuses an input at one of them).
STATS_FILES = ("summary.json", "people_per_image.png", "keypoint_fractions.png", "box_sizes.png")
SAMPLE_FILES = ("sample_*.png",)


def write_stats(ann_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write ``summary.json`` and PNG plots of a keypoint file's statistics; return the summary."""
    ann = load_keypoint_annotations(ann_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = dataset_stats(ann)
    plots = _plot_stats(ann, summary, out_dir)
    summary["plots"] = [p.name for p in plots]
    write_json_atomic(out_dir / "summary.json", summary, indent=2)
    return summary


def write_samples(
    ann_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_images: int = 16,
    seed: int = 0,
    augment: bool = True,
) -> list[Path]:
    """Draw skeletons on ``num_images`` training images as the model sees them; return the PNGs.

    With ``augment`` the images go through :func:`~raypose.data.transforms.build_train_transforms`
    (seeded by ``seed``) and the training filter (crowd regions and images under 10 labelled
    keypoints left out; people without keypoints kept as boxes).
    """
    import torch

    from raypose.data.dataset import KeypointDataset
    from raypose.data.draw import draw_skeletons
    from raypose.data.transforms import build_train_transforms

    ann = load_keypoint_annotations(ann_path)
    schema = schema_for(ann.num_keypoints)
    transforms = build_train_transforms(schema) if augment else None
    dataset = KeypointDataset(ann, image_dir, train=augment, transforms=transforms)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    order = torch.randperm(len(dataset))[: max(0, num_images)].tolist()
    written = []
    for index in order:
        image, target = dataset[index]
        drawn = draw_skeletons(image, target["keypoints"], schema, boxes=target["boxes"])
        path = out_dir / f"sample_{int(target['image_id']):012d}.png"
        with atomic_path(path) as tmp:
            drawn.save(tmp, format="PNG")
        written.append(path)
    logger.info("wrote %d previews to %s", len(written), out_dir)
    return written


# ----------------------------------------------------------------------------- check


@dataclass
class Issue:
    severity: str  # "error" (would break or corrupt training) or "warning" (worth a look)
    kind: str
    message: str
    image_id: Any = None
    ann_id: Any = None

    @property
    def location(self) -> str:
        """``image 3 annotation 7``, leaving out what the issue has not (the file, for file-level issues)."""
        parts = [
            f"{what} {value}"
            for what, value in (("image", self.image_id), ("annotation", self.ann_id))
            if value is not None
        ]
        return " ".join(parts) or "file"


@dataclass
class CheckReport:
    source: str
    images: int = 0
    people: int = 0
    issues: list[Issue] = field(default_factory=list)

    def add(self, severity: str, kind: str, message: str, image_id: Any = None, ann_id: Any = None) -> None:
        """Record an issue; ``image_id`` / ``ann_id`` stay None where the issue has none."""
        self.issues.append(Issue(severity, kind, message, image_id, ann_id))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f"{i.severity}: {i.kind}" for i in self.issues).items()))

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "images": self.images,
            "people": self.people,
            "counts": self.counts(),
            "issues": [vars(i) for i in self.issues],
        }


def _check_box_and_area(ann: dict, report: CheckReport) -> None:
    """A box needs a positive width and height; a person needs a positive area (OKS divides by it)."""
    where = {"image_id": ann["image_id"], "ann_id": ann["id"]}
    w, h = ann["bbox"][2:]
    if w < 0 or h < 0:
        report.add(
            "error", "negative box size", f"bbox {ann['bbox']} has a negative width or height", **where
        )
    elif w == 0 or h == 0:
        report.add("error", "zero-area box", f"bbox {ann['bbox']} has no area", **where)
    if not ann.get("iscrowd") and "area" in ann and ann["area"] <= 0:
        kind = "zero area" if ann["area"] == 0 else "negative area"
        report.add(
            "error", kind, f"area {ann['area']}: OKS scales by the area, so no detection matches", **where
        )


def _check_person(ann: dict, image: dict, k: int, report: CheckReport) -> None:
    where = {"image_id": ann["image_id"], "ann_id": ann["id"]}
    kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(k, 3)
    x, y, w, h = ann["bbox"]
    v = kps[:, 2]
    if not np.isin(v, (0, 1, 2)).all():
        report.add(
            "error", "bad visibility", f"visibility values {sorted(set(v.tolist()) - {0, 1, 2})}", **where
        )
    _check_box_and_area(ann, report)
    labelled = v > 0
    if ann.get("iscrowd"):
        return
    if not labelled.any():
        report.add("warning", "no labelled keypoint", "person without any labelled keypoint", **where)
    pts = kps[labelled, :2]
    width, height = image.get("width", math.inf), image.get("height", math.inf)
    outside_image = (pts[:, 0] < 0) | (pts[:, 1] < 0) | (pts[:, 0] > width) | (pts[:, 1] > height)
    if outside_image.any():
        report.add("error", "keypoint outside image", f"{int(outside_image.sum())} labelled points", **where)
    # One pixel of slack: COCO boxes come from polygons, keypoints from clicks.
    outside_box = (
        (pts[:, 0] < x - 1) | (pts[:, 1] < y - 1) | (pts[:, 0] > x + w + 1) | (pts[:, 1] > y + h + 1)
    )
    if outside_box.any() and w > 0 and h > 0:
        report.add("warning", "keypoint outside box", f"{int(outside_box.sum())} labelled points", **where)
    if ((kps[~labelled, :2]) != 0).any():
        report.add("warning", "coordinates on unlabelled point", "v = 0 with non-zero x, y", **where)
    if "num_keypoints" in ann and ann["num_keypoints"] != int(labelled.sum()):
        report.add(
            "warning",
            "stale num_keypoints",
            f"num_keypoints {ann['num_keypoints']} != {int(labelled.sum())}",
            **where,
        )


def _usable_images(entries: list, problems: list[FileProblem]) -> dict[Any, dict]:
    """Image entries by id, leaving out those whose id or file name was reported; an entry whose
    size was reported gets an infinite size (keypoints are not checked against it)."""
    bad_size = {p.image_id for p in problems if p.kind == "bad image size"}
    images: dict[Any, dict] = {}
    for image in entries:
        if not isinstance(image, dict) or type(image.get("id")) is not int or image["id"] in images:
            continue
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            continue
        if image["id"] in bad_size:
            image = {**image, "width": math.inf, "height": math.inf}
        images[image["id"]] = image
    return images


def _check_image_files(images: dict[Any, dict], image_dir: Path, report: CheckReport) -> None:
    """Every image file exists, decodes completely to 8-bit RGB as training decodes it, and has the
    size its entry declares.

    Raises:
        InputError: ``image_dir`` is not a folder (one error, not one per image).
    """
    from raypose.errors import InputError
    from raypose.images import read_rgb

    if not image_dir.is_dir():
        raise InputError(
            f"{image_dir}: image folder not found (checking the images of {report.source}); "
            "pass the folder holding the files its 'file_name' entries name"
        )
    for image_id, image in images.items():
        path = image_dir / image["file_name"]
        if not path.is_file():
            report.add("error", "missing image file", str(path), image_id)
            continue
        try:
            size = read_rgb(path).size  # decodes every byte: a bad file fails here, not in training
        except InputError as e:
            report.add("error", "unreadable image file", str(e), image_id)
            continue
        declared = (image.get("width"), image.get("height"))
        if math.inf not in declared and size != declared:
            report.add(
                "error",
                "image size mismatch",
                f"{path} is {size[0]}x{size[1]}, the entry says {declared[0]}x{declared[1]}",
                image_id,
            )


def check_annotations(
    source: str | os.PathLike | dict, image_dir: str | os.PathLike | None = None
) -> CheckReport:
    """Check a COCO keypoint file and return every problem found (it does not stop at the first).

    Raises:
        InputError: the file cannot be read at all (missing, not JSON, no keypoint category).
    """
    name = "<annotations>" if isinstance(source, dict) else str(source)
    data = source if isinstance(source, dict) else load_json(source, what="annotation file")
    # The problems every reader refuses come from the one validation; the rest are checked here.
    category, problems = keypoint_file_problems(data, name)
    k = len(category["keypoints"])
    report = CheckReport(source=name)
    for problem in problems:
        report.add("error", problem.kind, problem.message, problem.image_id, problem.ann_id)
    images = _usable_images(data["images"], problems)
    report.images = len(images)
    flagged = {p.ann_id for p in problems if p.ann_id is not None}
    with_people = set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("id") in flagged or ann.get("id") is None:
            continue
        if ann.get("category_id", category["id"]) != category["id"] or ann["image_id"] not in images:
            continue  # another category, or on an image entry already reported
        report.people += 1
        with_people.add(ann["image_id"])
        _check_person(ann, images[ann["image_id"]], k, report)
    if image_dir is not None:
        _check_image_files(images, Path(image_dir), report)
    empty = len(set(images) - with_people)
    if empty:
        logger.info("%s: %d images have no annotated person (fine for negatives)", name, empty)
    return report
