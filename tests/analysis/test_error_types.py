"""Per-keypoint error classification on hand-built scenes where every category is known.

The scene helpers here are also used by the other ``test_analysis_*`` files.
"""

from __future__ import annotations

import numpy as np
import pytest

from raypose.analysis.data import analysis_input_from_dicts
from raypose.analysis.error_types import (
    GOOD,
    GOOD_KS,
    INVERSION,
    JITTER,
    JITTER_KS,
    LOC_OKS_THRESHOLD,
    MISS,
    OKS_THRESHOLDS,
    SWAP,
    UNCLASSIFIED,
    background_false_positives,
    classify_keypoints,
    corrected_keypoints,
    false_negatives,
    image_oks,
    match_detections,
    matched_oks,
    matched_regular_gt,
    oks_loss_share,
)
from raypose.schema import schema_for

AREA = 2000.0  # small segment area relative to the 80 px keypoint grid: neighbours never confuse
SPACING = 80.0
IMAGE_W, IMAGE_H = 1600, 600


def template(num_kpts: int, origin: tuple[float, float]) -> np.ndarray:
    """(K, 3) keypoints of a person: every point on its own grid cell, all visible."""
    k = np.arange(num_kpts)
    pts = np.zeros((num_kpts, 3))
    pts[:, 0] = origin[0] + (k % 5) * SPACING
    pts[:, 1] = origin[1] + (k // 5) * SPACING
    pts[:, 2] = 2
    return pts


def ks_offset(ks: float, sigma: float, area: float = AREA) -> float:
    """Distance (pixels) at which a point has keypoint similarity ``ks``."""
    return float(np.sqrt(-np.log(ks) * 2.0 * area * (2 * sigma) ** 2))


def gt_ann(ann_id: int, image_id: int, kpts: np.ndarray, area: float = AREA, crowd: int = 0) -> dict:
    labelled = kpts[:, 2] > 0
    xs, ys = kpts[labelled, 0], kpts[labelled, 1]
    bbox = (
        [float(xs.min()), float(ys.min()), float(np.ptp(xs)), float(np.ptp(ys))]
        if labelled.any()
        else [0, 0, 10, 10]
    )
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": crowd,
        "area": area,
        "bbox": bbox,
        "num_keypoints": int(labelled.sum()),
        "keypoints": kpts.reshape(-1).tolist(),
    }


def det(image_id: int, kpts: np.ndarray, score: float, kp_scores: bool = True) -> dict:
    flat = kpts.copy()
    flat[:, 2] = 1
    out = {"image_id": image_id, "category_id": 1, "keypoints": flat.reshape(-1).tolist(), "score": score}
    if kp_scores:
        out["keypoint_scores"] = np.linspace(0.1, 0.9, len(kpts)).tolist()
    return out


def coco(num_kpts: int, images: list[tuple[int, int, int]], anns: list[dict]) -> dict:
    schema = schema_for(num_kpts)
    return {
        "images": [{"id": i, "file_name": f"{i:06d}.png", "width": w, "height": h} for i, w, h in images],
        "annotations": anns,
        "categories": [schema.coco_category(1)],
    }


def make_scene(num_kpts: int):
    """Image 1: people A and B, a detection on each; image 2: person C (never detected) and a
    background detection. Returns (gt, dets, expected classes of detection on A as {k: code})."""
    schema = schema_for(num_kpts)
    idx = schema.index
    sig = schema.sigmas
    a = template(num_kpts, (100, 100))
    b = template(num_kpts, (1100, 100))
    c = template(num_kpts, (100, 100))
    a[idx("left_ear"), :] = 0  # unlabelled: never classified

    d = a.copy()
    d[idx("left_ear"), :2] = (700, 500)  # wherever it is, the point is unlabelled in the ground truth
    expected = {idx("left_ear"): UNCLASSIFIED}
    k = idx("right_elbow")
    d[k, 0] += ks_offset(0.9, sig[k])
    expected[k] = GOOD
    k = idx("left_wrist")
    d[k, 0] += ks_offset(0.7, sig[k])
    expected[k] = JITTER
    k, r = idx("left_shoulder"), idx("right_shoulder")
    d[k, :2] = a[r, :2] + (0, ks_offset(0.9, sig[r]))
    expected[k] = INVERSION
    k = idx("left_knee")
    d[k, :2] = b[k, :2]
    expected[k] = SWAP
    k, other = idx("right_hip"), idx("left_hip")  # on another person's counterpart: still a swap
    d[k, :2] = b[other, :2] + (ks_offset(0.6, sig[other]), 0)
    expected[k] = SWAP
    k = idx("right_ankle")
    d[k, 0] += 500
    expected[k] = MISS
    k = idx("nose")  # near its own point but not good
    d[k, 1] += ks_offset(0.55, sig[k])
    expected[k] = JITTER
    if num_kpts == 23:
        k, r = idx("left_heel"), idx("right_heel")
        d[k, :2] = a[r, :2]
        expected[k] = INVERSION
        k = idx("right_big_toe")
        d[k, 1] += 300
        expected[k] = MISS
        k = idx("left_small_toe")
        d[k, 0] -= ks_offset(0.6, sig[k])
        expected[k] = JITTER
    for k in range(num_kpts):
        expected.setdefault(k, GOOD)

    gt = coco(
        num_kpts,
        [(1, IMAGE_W, IMAGE_H), (2, IMAGE_W, IMAGE_H)],
        [gt_ann(10, 1, a), gt_ann(11, 1, b), gt_ann(20, 2, c)],
    )
    background = template(num_kpts, (1100, 100))
    dets = [det(1, d, 0.9), det(1, b.copy(), 0.8), det(2, background, 0.7)]
    return gt, dets, expected


@pytest.mark.parametrize("num_kpts", [17, 23])
def test_every_category_is_found(num_kpts):
    gt, dets, expected = make_scene(num_kpts)
    inp = analysis_input_from_dicts(gt, dets)
    data = inp.data
    matched = matched_regular_gt(data, match_detections(data, inp.sigmas, [LOC_OKS_THRESHOLD]))
    # detections sorted by image then score: A's (0.9), B's (0.8), background (0.7)
    assert matched.tolist() == [0, 1, -1]
    errors = classify_keypoints(data, matched, inp.schema)
    want = np.array([expected[k] for k in range(num_kpts)])
    np.testing.assert_array_equal(errors.classes[0], want)
    b_classes = np.full(num_kpts, GOOD)
    np.testing.assert_array_equal(errors.classes[1], b_classes)
    assert (errors.classes[2] == UNCLASSIFIED).all()

    counts = errors.counts()
    for code, name in enumerate(("good", "jitter", "inversion", "swap", "miss")):
        assert counts[name] == int(np.sum(want == code)) + (num_kpts if code == GOOD else 0)
    per_k = errors.counts_per_keypoint(inp.schema.names)
    assert per_k["left_knee"] == {"good": 1, "jitter": 0, "inversion": 0, "swap": 1, "miss": 0}
    assert per_k["left_ear"] == {"good": 1, "jitter": 0, "inversion": 0, "swap": 0, "miss": 0}
    assert sum(sum(v.values()) for v in per_k.values()) == sum(counts.values())


@pytest.mark.parametrize("num_kpts", [17, 23])
def test_corrections_reach_their_target_similarity(num_kpts):
    gt, dets, expected = make_scene(num_kpts)
    inp = analysis_input_from_dicts(gt, dets)
    data = inp.data
    matched = matched_regular_gt(data, match_detections(data, inp.sigmas, [LOC_OKS_THRESHOLD]))
    errors = classify_keypoints(data, matched, inp.schema)

    only_miss = corrected_keypoints(data, errors, inp.sigmas, ["miss"])
    changed = np.flatnonzero((only_miss[0] != data.dt_kpts[0]).any(axis=1))
    assert changed.tolist() == sorted(k for k, c in expected.items() if c == MISS)

    fixed = corrected_keypoints(data, errors, inp.sigmas, ["miss", "swap", "inversion", "jitter"])
    from dataclasses import replace

    after = classify_keypoints(replace(data, dt_kpts=fixed), matched, inp.schema)
    own = after.own_ks[0]
    for k, code in expected.items():
        if code == MISS:
            assert JITTER_KS <= own[k] < JITTER_KS + 1e-5
            assert after.classes[0, k] == JITTER
        elif code == JITTER:
            assert GOOD_KS <= own[k] < GOOD_KS + 1e-5
            assert after.classes[0, k] == GOOD
        elif code in (INVERSION, SWAP):
            # same precision as it had on the wrong point
            wrong = errors.inv_ks[0, k] if code == INVERSION else errors.other_ks[0, k]
            assert own[k] == pytest.approx(wrong, abs=1e-5)
        elif code == GOOD:
            np.testing.assert_array_equal(fixed[0, k], data.dt_kpts[0, k])
    np.testing.assert_array_equal(fixed[1:], data.dt_kpts[1:])  # nothing to fix / unmatched


def test_nose_is_never_an_inversion():
    schema = schema_for(17)
    a = template(17, (100, 100))
    d = a.copy()
    d[0, 0] += ks_offset(0.6, schema.sigmas[0])
    inp = analysis_input_from_dicts(coco(17, [(1, 800, 600)], [gt_ann(1, 1, a)]), [det(1, d, 0.5)])
    matched = matched_regular_gt(inp.data, match_detections(inp.data, inp.sigmas, [LOC_OKS_THRESHOLD]))
    errors = classify_keypoints(inp.data, matched, schema)
    assert errors.classes[0, 0] == JITTER
    assert errors.inv_ks[0, 0] == errors.own_ks[0, 0]


def test_false_positives_negatives_and_image_oks():
    gt, dets, _ = make_scene(17)
    # a low-score duplicate of B: matched at no threshold (B is taken), so also a false positive
    dets.append(det(1, template(17, (1100, 100)), 0.1))
    inp = analysis_input_from_dicts(gt, dets)
    data, sigmas = inp.data, inp.sigmas
    result = match_detections(data, sigmas, OKS_THRESHOLDS)
    fp = background_false_positives(result)
    # order: image 1 [A 0.9, B 0.8, dup 0.1], image 2 [background 0.7]
    assert fp.tolist() == [False, False, True, True]
    fn = false_negatives(data, result)
    assert fn.tolist() == [False, False, True]  # C is never detected

    loc = match_detections(data, sigmas, [LOC_OKS_THRESHOLD])
    matched = matched_regular_gt(data, loc)
    oks = matched_oks(data, sigmas, matched)
    assert oks[1] == pytest.approx(1.0)
    assert np.isnan(oks[3])
    img = image_oks(data, oks, matched, np.zeros(len(matched), dtype=bool))
    assert img[0] == pytest.approx((oks[0] + oks[1]) / (2 + 0.1))
    assert img[1] == pytest.approx(0.0)  # one missed person plus a false positive


def test_oks_loss_share_splits_one_minus_oks():
    gt, dets, _ = make_scene(17)
    inp = analysis_input_from_dicts(gt, dets)
    data, sigmas = inp.data, inp.sigmas
    matched = matched_regular_gt(data, match_detections(data, sigmas, [LOC_OKS_THRESHOLD]))
    errors = classify_keypoints(data, matched, inp.schema)
    share, mean_ks = oks_loss_share(errors)
    assert share.sum() == pytest.approx(1.0)
    assert share[inp.schema.index("left_ear")] == 0.0  # unlabelled
    assert mean_ks[inp.schema.index("left_ear")] == 1.0  # only B's (perfect) left ear is labelled
    # detection on A: total loss is 1 - OKS; it is the only one losing anything
    loss_a = 1.0 - matched_oks(data, sigmas, matched)[0]
    n_lab = 16
    k = inp.schema.index("right_ankle")  # a miss: ks ~ 0, so it loses ~1/16 of OKS
    assert share[k] * loss_a == pytest.approx((1 - errors.own_ks[0, k]) / n_lab)
