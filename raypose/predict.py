"""``raypose predict``: a checkpoint's detections on image files as a COCO keypoint results file."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

from raypose.checkpoint import load_model_from_checkpoint
from raypose.errors import ConfigError, InputError
from raypose.evaluation.cocoeval import outputs_to_coco_results
from raypose.inference import predict_files, resolve_device
from raypose.inference_options import InferenceOptions
from raypose.io import check_output_file, load_json, write_json_atomic

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def collect_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Image files named directly or found (sorted) in the named folders, each file once.

    An image reached twice (a folder and a file in it, the same file named twice, or a link to
    it) is kept where it first appears: predicting it twice would add duplicate detections,
    which COCOeval counts as false positives.

    Raises:
        InputError: a path does not exist, or nothing is found.
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.is_file():
            files.append(item)
        else:
            raise InputError(f"no such image or folder: {item}")
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    first_of: dict[Path, Path] = {}
    for f in files:
        first_of.setdefault(f.resolve(), f)
    unique = list(first_of.values())
    if len(unique) < len(files):
        log.warning("%d duplicate image(s) dropped: named more than once (directly, in a folder or through a "
                    "link); each is predicted once", len(files) - len(unique))
    return unique


def image_ids_for(files: list[Path], ann: str | os.PathLike | None) -> list[int]:
    """COCO image ids: from ``ann``'s ``file_name`` map, else from numeric file stems.

    Raises:
        InputError: a file is not in ``ann``, or (without ``ann``) its stem is not a number.
    """
    if ann is not None:
        from raypose.data.annotations import validate_keypoint_file

        data = load_json(ann, what="annotation file")
        validate_keypoint_file(data, str(ann))  # the checks every reader of an annotation file makes
        by_name = {img["file_name"]: img["id"] for img in data["images"]}
        missing = [f.name for f in files if f.name not in by_name]
        if missing:
            raise InputError(
                f"{ann}: no image entry for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        return [by_name[f.name] for f in files]
    ids = []
    for f in files:
        if not f.stem.isdigit():
            raise InputError(f"{f}: cannot tell its COCO image id from the name; pass --ann ANNOTATIONS.json")
        ids.append(int(f.stem))
    return ids


def predict_to_results(
    checkpoint: str | os.PathLike,
    images: list[str | os.PathLike],
    out: str | os.PathLike,
    ann: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 4,
    score_thresh: float = 0.0,
    options: InferenceOptions | None = None,
    tracking_uri: str | None = None,
) -> tuple[int, int]:
    """Write COCO keypoint results for ``images``, inferred with ``options`` (None: stock);
    returns (images, detections). ``checkpoint`` is a file, or a registered MLflow model
    (``models:/NAME/VERSION``, ``/latest`` or ``@ALIAS``) in the registry at ``tracking_uri``.

    Every argument is checked before the model runs.

    Raises:
        ConfigError: ``batch_size`` < 1, ``score_thresh`` outside [0, 1] or NaN, an unusable
            ``device``, or ``out`` a folder or one of the inputs.
        InputError: no images, or image ids that cannot be told (see :func:`image_ids_for`).
        WeightsError: the checkpoint, or the registered model, does not exist or is not raypose's.
    """
    check_predict_options(batch_size, score_thresh)
    check_output_file(out, inputs=(checkpoint, ann, *images))
    files = collect_images(images)
    ids = image_ids_for(files, ann)
    dev = resolve_device(device)
    if str(checkpoint).startswith("models:/"):
        from raypose.experiment_log import resolve_checkpoint

        with tempfile.TemporaryDirectory(prefix="raypose-model-") as tmp:
            model, _ = load_model_from_checkpoint(
                resolve_checkpoint(checkpoint, tracking_uri, Path(tmp)), dev
            )
    else:
        model, _ = load_model_from_checkpoint(checkpoint, dev)
    outputs = predict_files(model, files, dev, batch_size, options)
    results = [r for r in outputs_to_coco_results(outputs, ids) if r["score"] >= score_thresh]
    write_json_atomic(out, results)
    return len(files), len(results)


def check_predict_options(batch_size: int, score_thresh: float) -> None:
    """Raises ConfigError for a batch size below 1 or a score threshold outside [0, 1] (or NaN)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (images per forward pass), got {batch_size}")
    if not (math.isfinite(score_thresh) and 0.0 <= score_thresh <= 1.0):
        raise ConfigError(
            f"--score-thresh must be in [0, 1] (detection scores are probabilities), got {score_thresh}; "
            "0 keeps every detection"
        )
