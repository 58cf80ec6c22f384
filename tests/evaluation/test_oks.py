"""OKS: bit-identical to pycocotools' computeOks, and the formula on hand-made cases."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from raypose.evaluation.oks import keypoint_similarity, keypoint_similarity_pairs, oks_matrix, oks_pairs
from raypose.schema import COCO17, COCO23


def _random_people(rng, n, k, integer=False):
    xy = rng.uniform(0, 300, (n, k, 2))
    if integer:
        xy = np.round(xy)
    v = rng.choice([0, 1, 2], (n, k), p=[0.3, 0.2, 0.5])
    v[rng.random(n) < 0.3] = 0  # some with no labelled keypoint
    v[0, :] = 0
    v[-1, :] = 0
    v[-1, rng.integers(k)] = 2  # exactly one labelled keypoint
    boxes = np.concatenate([rng.uniform(0, 200, (n, 2)), rng.uniform(5, 150, (n, 2))], axis=1)
    if integer:
        boxes = np.round(boxes)
    return np.concatenate([xy, v[..., None]], axis=-1), boxes, rng.uniform(20, 20000, n)


def _pycocotools_oks(dt, gt, boxes, areas, sigmas):
    ev = COCOeval(iouType="keypoints")
    ev.params.kpt_oks_sigmas = sigmas
    ev._gts[1, 1] = [
        {"keypoints": g.ravel().tolist(), "bbox": b.tolist(), "area": float(a)}
        for g, b, a in zip(gt, boxes, areas)
    ]
    # Descending scores keep pycocotools' sort from reordering the detections.
    ev._dts[1, 1] = [{"keypoints": d.ravel().tolist(), "score": 1.0 - i / 100} for i, d in enumerate(dt)]
    with contextlib.redirect_stdout(io.StringIO()):
        return np.asarray(ev.computeOks(1, 1))


@pytest.mark.parametrize("schema", [COCO17, COCO23])
@pytest.mark.parametrize("integer", [False, True])
def test_oks_matrix_is_bit_identical_to_pycocotools(schema, integer):
    rng = np.random.default_rng(schema.num_keypoints + integer)
    for _ in range(5):
        gt, boxes, areas = _random_people(rng, 9, schema.num_keypoints, integer)
        dt, _, _ = _random_people(rng, 15, schema.num_keypoints, integer)
        # Some detections close to people, so OKS spans (0, 1).
        dt[:9, :, :2] = gt[:, :, :2] + rng.normal(0, 5, (9, schema.num_keypoints, 2))
        ours = oks_matrix(dt, gt, boxes, areas, schema.sigmas)
        ref = _pycocotools_oks(dt, gt, boxes, areas, schema.sigmas)
        assert ours.shape == (15, 9)
        assert np.array_equal(ours, ref)
        assert ours.max() > 0.5 and ours.min() < 0.1


def test_keypoint_similarity_formula():
    sigmas = COCO17.sigmas
    gt = np.zeros((1, 17, 2))
    dt = np.zeros((1, 17, 2))
    dt[0, 3] = [3.0, 4.0]  # distance 5 on keypoint 3
    ks = keypoint_similarity(dt, gt, np.array([400.0]), sigmas)
    assert ks.shape == (1, 1, 17)
    expected = np.exp(-25.0 / (2 * sigmas[3]) ** 2 / 400.0 / 2)
    assert ks[0, 0, 3] == pytest.approx(expected, rel=1e-12)
    assert np.all(np.delete(ks[0, 0], 3) == 1.0)
    pairs = keypoint_similarity_pairs(dt, gt, np.array([400.0]), sigmas)
    assert np.array_equal(pairs, ks[:, 0])


def test_oks_averages_labelled_keypoints_only():
    sigmas = COCO17.sigmas
    gt = np.zeros((1, 17, 3))
    gt[0, :2, 2] = 2  # only keypoints 0 and 1 labelled
    dt = np.zeros((1, 17, 3))
    dt[0, 0, :2] = [2.0, 0.0]
    dt[0, 5:, :2] = 500.0  # far off, but unlabelled: must not count
    oks = oks_matrix(dt, gt, np.array([[0, 0, 10, 10]]), np.array([100.0]), sigmas)
    ks0 = np.exp(-4.0 / (2 * sigmas[0]) ** 2 / 100.0 / 2)
    assert oks[0, 0] == pytest.approx((ks0 + 1.0) / 2, rel=1e-12)


def test_unlabelled_person_uses_enlarged_box():
    sigmas = COCO17.sigmas
    gt = np.zeros((1, 17, 3))
    box = np.array([[100.0, 100.0, 50.0, 80.0]])  # enlarged box x: [50, 200], y: [20, 260]
    inside = np.zeros((1, 17, 3))
    inside[..., 0], inside[..., 1] = 60.0, 250.0
    assert oks_matrix(inside, gt, box, np.array([1000.0]), sigmas)[0, 0] == 1.0
    outside = inside.copy()
    outside[0, :, 0] = 210.0  # 10 px right of the enlarged box
    expected = np.mean(np.exp(-100.0 / (2 * sigmas) ** 2 / 1000.0 / 2))
    assert oks_pairs(outside, gt, box, np.array([1000.0]), sigmas)[0] == pytest.approx(expected, rel=1e-12)


def test_empty_and_bad_shapes():
    assert oks_matrix(
        np.zeros((0, 17, 3)), np.zeros((2, 17, 3)), np.zeros((2, 4)), np.ones(2), COCO17.sigmas
    ).shape == (0, 2)
    with pytest.raises(ValueError, match="sigmas"):
        oks_pairs(np.zeros((1, 17, 3)), np.zeros((1, 17, 3)), np.zeros((1, 4)), np.ones(1), COCO23.sigmas)
