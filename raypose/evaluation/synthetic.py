"""Synthetic COCO keypoint ground truth and detections, for tests and benchmarks.

The cases cover what makes COCO evaluation subtle: crowd people, people with no labelled
keypoint (``num_keypoints == 0``), images without people or without detections, more than 20
detections in an image, tied scores, and people of every area range. Keypoints are ``(x, y, v)``
in pixels.
"""

from __future__ import annotations

import numpy as np

from raypose.schema import schema_for


def synthetic_keypoint_case(
    num_images: int = 50,
    people_per_image: float = 2.2,
    dets_per_image: float = 10.0,
    num_keypoints: int = 17,
    seed: int = 0,
    crowd_fraction: float = 0.05,
    unlabelled_fraction: float = 0.1,
    no_det_fraction: float = 0.1,
    tie_fraction: float = 0.2,
    integer_coords: bool = False,
) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dict and a matching list of keypoint results.

    Detections are noisy copies of people (noise from sub-pixel to far off), plus random
    false positives; some images get many (> 20) detections. ``tie_fraction`` of the scores
    come from a handful of values, so sorting ties matter.

    Returns:
        ``(gt, dets)``: ``gt`` has ``images``, ``annotations`` (with ``num_keypoints``,
        ``iscrowd``, ``area``, ``bbox``) and one person category; ``dets`` are COCO results with
        ``bbox`` and ``score``.
    """
    rng = np.random.default_rng(seed)
    k = num_keypoints
    images = [
        {"id": 1000 + 7 * i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(num_images)
    ]
    n_people = rng.poisson(people_per_image, num_images)
    total = int(n_people.sum())
    size = np.exp(rng.uniform(np.log(12), np.log(400), total))  # spans small, medium and large
    w, h = size * rng.uniform(0.4, 0.8, total), size
    x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h * 0.9)
    kx = x[:, None] + rng.uniform(0, 1, (total, k)) * w[:, None]
    ky = y[:, None] + rng.uniform(0, 1, (total, k)) * h[:, None]
    vis = rng.choice([0, 1, 2], size=(total, k), p=[0.25, 0.15, 0.6])
    crowd = rng.random(total) < crowd_fraction
    vis[(rng.random(total) < unlabelled_fraction) | crowd] = 0
    if integer_coords:
        kx, ky = np.round(kx), np.round(ky)
    kpts = np.stack([np.where(vis > 0, kx, 0), np.where(vis > 0, ky, 0), vis], axis=-1)
    area = w * h * rng.uniform(0.5, 0.9, total)
    image_of = np.repeat(np.arange(num_images), n_people)
    annotations = [
        {
            "id": n + 1,
            "image_id": images[image_of[n]]["id"],
            "category_id": 1,
            "keypoints": kpts[n].ravel().tolist()
            if integer_coords
            else np.round(kpts[n], 2).ravel().tolist(),
            "num_keypoints": int(np.count_nonzero(vis[n])),
            "iscrowd": int(crowd[n]),
            "area": float(area[n]),
            "bbox": [float(x[n]), float(y[n]), float(w[n]), float(h[n])],
        }
        for n in range(total)
    ]
    gt = {"images": images, "annotations": annotations, "categories": [schema_for_or_names(k)]}
    dets = _detections(
        rng, images, image_of, n_people, kx, ky, size, dets_per_image, no_det_fraction, tie_fraction
    )
    if integer_coords:
        for det in dets:
            det["keypoints"] = [round(v) for v in det["keypoints"]]
    return gt, dets


def schema_for_or_names(num_keypoints: int) -> dict:
    """The COCO person category for ``num_keypoints`` (schema names when raypose has a schema)."""
    try:
        return schema_for(num_keypoints).coco_category()
    except ValueError:
        return {
            "id": 1,
            "name": "person",
            "keypoints": [f"kp{i}" for i in range(num_keypoints)],
            "skeleton": [],
        }


def _detections(rng, images, image_of, n_people, kx, ky, size, dets_per_image, no_det_fraction, tie_fraction):
    num_images, k = len(images), kx.shape[1]
    n_dets = rng.poisson(dets_per_image, num_images)
    n_dets[rng.random(num_images) < 0.05] += 25  # > maxDets (20) in some images
    n_dets[rng.random(num_images) < no_det_fraction] = 0
    if num_images >= 2:  # always at least one crowded image and one without detections
        n_dets[0] += 25
        n_dets[-1] = 0
    total = int(n_dets.sum())
    det_image = np.repeat(np.arange(num_images), n_dets)
    first_person = np.cumsum(n_people) - n_people
    has_people = n_people[det_image] > 0
    true_pos = has_people & (rng.random(total) < 0.75)
    person = first_person[det_image] + (rng.random(total) * np.maximum(n_people[det_image], 1)).astype(int)
    person = np.where(true_pos, person, 0)
    noise = (size[person] if len(size) else np.ones(total))[:, None] * rng.choice(
        [0.005, 0.03, 0.08, 0.3], total
    )[:, None]
    dx = np.where(true_pos[:, None], kx[person] if len(kx) else 0, rng.uniform(0, 640, (total, 1)))
    dy = np.where(true_pos[:, None], ky[person] if len(ky) else 0, rng.uniform(0, 480, (total, 1)))
    dx = dx + rng.normal(0, 1, (total, k)) * np.where(true_pos[:, None], noise, 40)
    dy = dy + rng.normal(0, 1, (total, k)) * np.where(true_pos[:, None], noise, 40)
    scores = np.round(rng.random(total), 4)
    ties = rng.random(total) < tie_fraction
    scores[ties] = rng.choice([0.25, 0.5, 0.75, 0.9], int(ties.sum()))
    x0, y0 = dx.min(1), dy.min(1)
    bw, bh = dx.max(1) - x0, dy.max(1) - y0
    flat = np.stack([dx, dy, np.ones_like(dx)], axis=-1).reshape(total, -1).round(2)
    return [
        {
            "image_id": images[det_image[n]]["id"],
            "category_id": 1,
            "keypoints": flat[n].tolist(),
            "score": float(scores[n]),
            "bbox": [float(x0[n]), float(y0[n]), float(bw[n]), float(bh[n])],
        }
        for n in range(total)
    ]
