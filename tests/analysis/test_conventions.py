"""The coco-analyze convention, one hand-built case per difference (a-f) with raypose's.

Every expected value follows from coco-analyze's definitions (``pycocotools/cocoanalyze.py`` and
``cocoeval.py`` of github.com/matteorr/coco-analyze); each test also shows that raypose's
convention, the default, gives something else.
"""

from __future__ import annotations

import numpy as np
import pytest

from raypose.analysis.conventions import COCO_ANALYZE, CONVENTIONS, RAYPOSE, convention_for
from raypose.analysis.data import analysis_input_from_dicts
from raypose.analysis.error_types import (
    GOOD,
    INVERSION,
    JITTER,
    SWAP,
    UNCLASSIFIED,
    classify_keypoints,
    corrected_keypoints,
    pair_keypoint_similarity,
)
from raypose.analysis.progressive import classify_input, progressive_correction
from raypose.analysis.rescoring import optimal_scores
from raypose.errors import ConfigError
from raypose.evaluation.fast import pair_oks
from raypose.evaluation.synthetic import synthetic_keypoint_case
from raypose.schema import schema_for
from tests.analysis.test_error_types import AREA, coco, det, gt_ann, ks_offset, make_scene, template

RECALL_POINTS = 101  # pycocotools' recall thresholds 0:0.01:1
IMAGE = (1, 1600, 600)


def run(gt: dict, dets: list[dict], convention):
    return progressive_correction(analysis_input_from_dicts(gt, dets), convention=convention)


def ap_by_step(result) -> dict[str, float]:
    return {s.name: s.result.ap for s in result.steps}


def test_a_area_range_ignores_people_and_unmatched_detections_under_32_squared():
    a = template(17, (100, 100))
    small = template(17, (1100, 100)) * [0.1, 0.1, 1] + [990, 90, 0]  # a person of area 900 < 32^2
    tiny = np.zeros((17, 3))
    tiny[:, :2] = np.random.default_rng(0).uniform(0, 20, (17, 2)) + (700, 450)  # keypoints inside 20 x 20
    gt = coco(17, [IMAGE], [gt_ann(1, 1, a), gt_ann(2, 1, small, area=900.0)])
    dets = [det(1, tiny, 0.95), det(1, a.copy(), 0.9)]
    # coco-analyze: the small person and the unmatched tiny detection are ignored, one perfect match
    assert run(gt, dets, COCO_ANALYZE).steps[0].result.ap == pytest.approx(1.0, abs=1e-12)
    # COCO (raypose): the tiny detection is a false positive ranked first, the small person a miss:
    # precision 0.5 up to recall 0.5 at every threshold
    assert run(gt, dets, RAYPOSE).steps[0].result.ap == pytest.approx(0.5 * 51 / RECALL_POINTS)


@pytest.mark.parametrize("convention", [COCO_ANALYZE, RAYPOSE])
def test_b_corrected_keypoints_land_at_the_fourth_root_in_coco_analyze(convention):
    schema = schema_for(17)
    a = template(17, (100, 100))
    d = a.copy()
    jitter, miss = schema.index("left_wrist"), schema.index("right_knee")
    d[jitter, 0] += ks_offset(0.7, schema.sigmas[jitter])
    d[miss, 0] += 500
    inp = analysis_input_from_dicts(coco(17, [IMAGE], [gt_ann(1, 1, a)]), [det(1, d, 0.9)])
    errors = classify_input(inp, convention)
    assert errors.classes[0, jitter] == JITTER and errors.classes[0, miss] == 4  # MISS
    sigmas = convention.keypoint_sigmas(schema)
    fixed = corrected_keypoints(inp.data, errors, sigmas, ["miss", "jitter"], convention)
    gt_pts = inp.data.gt_kpts[:1, :, :2]
    ks = pair_keypoint_similarity(fixed[:, :, :2], gt_pts, inp.data.gt_areas[:1], sigmas)[0]
    if convention is COCO_ANALYZE:
        # sqrt(-ln(t) 2 area sigma^2) from the point, where OKS divides by (2 sigma)^2: t^(1/4)
        shrink = AREA / (AREA + np.spacing(1))
        assert ks[jitter] == pytest.approx(0.85 ** (shrink / 4), abs=1e-12)  # 0.960
        assert ks[miss] == pytest.approx(0.5 ** (shrink / 4), abs=1e-12)  # 0.841
        want = a[jitter, 0] + np.sqrt(-np.log(0.85) * 2 * AREA * sigmas[jitter] ** 2)
        assert fixed[0, jitter, 0] == want and fixed[0, jitter, 1] == a[jitter, 1]
    else:
        assert ks[jitter] == pytest.approx(0.85, abs=1e-5) and ks[jitter] >= 0.85
        assert ks[miss] == pytest.approx(0.5, abs=1e-5) and ks[miss] >= 0.5


def test_c_background_steps_per_threshold_make_no_fn_one_by_construction():
    """P1's detection misses every point (ks 0.3); coco-analyze corrects it to ks 0.5^(1/4) = 0.841,
    so it is matched up to OKS 0.8 and unmatched at 0.85, 0.9, 0.95. P2's detection is exact."""
    schema = schema_for(17)
    p1, p2 = template(17, (100, 100)), template(17, (1100, 100))
    d1 = p1.copy()
    d1[:, 0] += [ks_offset(0.3, s) for s in schema.sigmas]
    gt = coco(17, [IMAGE], [gt_ann(1, 1, p1), gt_ann(2, 1, p2)])
    dets = [det(1, d1, 0.9), det(1, p2.copy(), 0.8)]
    result = run(gt, dets, COCO_ANALYZE)
    assert result.errors.counts()["miss"] == 17
    ap = ap_by_step(result)
    # optimal score ranks P2's exact detection (OKS 1) first; at the 3 highest thresholds P1's
    # detection is a false positive after it: precision 1 up to recall 0.5 (51 of 101 points)
    three_high = (7 + 3 * 51 / RECALL_POINTS) / 10
    assert ap["score"] == pytest.approx(three_high, abs=1e-12)
    assert ap["background_fp"] == pytest.approx(three_high, abs=1e-12)  # ignoring it there changes nothing
    assert ap["false_negative"] == pytest.approx(1.0, abs=1e-12)  # P1 ignored where unmatched
    counts = [(row["false_positives"], row["false_negatives"]) for row in result.background_per_threshold]
    assert counts == [(0, 0)] * 7 + [(1, 1)] * 3
    # raypose: corrected, P1's detection reaches OKS 0.5, so it is matched at 0.5: after the
    # corrections neither it nor P1 counts as background, and missing P1 at 0.55+ still costs AP
    ours = ap_by_step(run(gt, dets, RAYPOSE))
    assert ours["background_fp"] == ours["score"]
    assert ours["false_negative"] == ours["score"] < 0.6


def test_d_optimal_score_is_max_oks_then_soft_nms():
    schema = schema_for(17)
    sigmas = schema.sigmas
    a = template(17, (100, 100))
    good, duplicate = a.copy(), a.copy()
    good[:, 0] += [ks_offset(0.9, s) for s in sigmas]  # OKS 0.9
    duplicate[:, 1] += [ks_offset(0.8, s) for s in sigmas]  # OKS 0.8, scored higher
    far = template(17, (1100, 300))
    gt = coco(17, [IMAGE], [gt_ann(1, 1, a)])
    inp = analysis_input_from_dicts(gt, [det(1, good, 0.2), det(1, duplicate, 0.9), det(1, far, 0.5)])
    pairs = pair_oks(inp.data, inp.sigmas)
    # detections in score order: duplicate, far, good
    scores = optimal_scores(inp.data, pairs, COCO_ANALYZE, COCO_ANALYZE.keypoint_sigmas(schema))
    # soft-NMS: the good one (0.9) is kept first; the duplicate decays by exp(-oks^2 / 0.5), oks
    # between the two detections over all 17 points, with the mean of their keypoint-box areas
    box = [np.ptp(k[:, 0]) * np.ptp(k[:, 1]) for k in (good, duplicate)]
    dx, dy = duplicate[:, 0] - good[:, 0], duplicate[:, 1] - good[:, 1]
    e = (dx**2 + dy**2) / (2 * COCO_ANALYZE.keypoint_sigmas(schema)) ** 2 / (np.mean(box) + np.spacing(1)) / 2
    oks_between = np.exp(-e).mean()
    assert 0.5 < oks_between < 1.0
    assert scores == pytest.approx([0.8 * np.exp(-(oks_between**2) / 0.5), 0.0, 0.9], abs=1e-12)
    # raypose: one-to-one, the duplicate is unassigned and scores 0
    assert optimal_scores(inp.data, pairs, RAYPOSE, sigmas) == pytest.approx([0.0, 0.0, 0.9], abs=1e-12)


def exactly_good_area(x_offset: float, sigma: float) -> float:
    """An area near AREA at which a point ``x_offset`` px from its ground truth has ks exactly 0.85."""
    area = AREA
    for _ in range(10_000):
        ks = pair_keypoint_similarity(
            np.array([[[180.0 + x_offset, 0.0]]]),
            np.array([[[180.0, 0.0]]]),
            np.array([area]),
            np.array([sigma]),
        )
        if ks[0, 0] == 0.85:
            return area
        area = np.nextafter(area, 0.0 if ks[0, 0] > 0.85 else np.inf)
    raise AssertionError("no area gives ks 0.85 exactly")


def test_e_ties_and_the_good_threshold():
    schema = schema_for(17)
    lw, rw, eye = schema.index("left_wrist"), schema.index("right_wrist"), schema.index("left_eye")
    a = template(17, (500, 100))
    # B's left wrist lies on A's right wrist: B = the template shifted so that B[lw] == A[rw]
    b = template(17, (0, 0))
    b[:, :2] += a[rw, :2] - b[lw, :2]
    d = a.copy()
    d[lw, :2] = a[rw, :2]  # as close to A's counterpart (inversion) as to B's same point (swap)
    offset = ks_offset(0.85, schema.sigmas[eye])
    d[eye, 0] += offset
    area = exactly_good_area(d[eye, 0] - a[eye, 0], schema.sigmas[eye])  # both sigmas agree for the eye
    gt = coco(17, [(1, 1600, 600)], [gt_ann(1, 1, a, area=area), gt_ann(2, 1, b, area=area)])
    inp = analysis_input_from_dicts(gt, [det(1, d, 0.9)])
    mine = classify_input(inp, RAYPOSE)
    theirs = classify_input(inp, COCO_ANALYZE)
    assert mine.own_ks[0, eye] == theirs.own_ks[0, eye] == 0.85
    assert mine.inv_ks[0, lw] == mine.other_ks[0, lw] == 1.0
    # ties: own > counterpart > other person (raypose) vs own > other person > counterpart
    assert (mine.classes[0, lw], theirs.classes[0, lw]) == (INVERSION, SWAP)
    # good: ks >= 0.85 (raypose) vs ks > 0.85, so exactly 0.85 is in no category
    assert (mine.classes[0, eye], theirs.classes[0, eye]) == (GOOD, UNCLASSIFIED)
    assert sum(theirs.counts().values()) == 16  # the point at 0.85 is in no category


def test_f_detections_on_ignored_people_with_keypoints_are_classified():
    schema = schema_for(17)
    a = template(17, (100, 100))
    crowd = template(17, (1100, 100))  # a crowd region that labels keypoints
    small = template(17, (0, 0)) * [0.1, 0.1, 1] + [600, 400, 0]  # outside coco-analyze's range
    bare = template(17, (1100, 400))
    bare[:, :] = 0  # a crowd with no keypoints (num_keypoints 0): nothing to compare with
    on_crowd = crowd.copy()
    k = schema.index("left_elbow")
    on_crowd[k, 0] += ks_offset(0.7, schema.sigmas[k])
    anns = [
        gt_ann(1, 1, a),
        gt_ann(2, 1, crowd, crowd=1),
        gt_ann(3, 1, small, area=900.0),
        {**gt_ann(4, 1, bare, crowd=1), "bbox": [1100, 400, 300, 150]},
    ]
    dets = [det(1, a.copy(), 0.9), det(1, on_crowd, 0.8), det(1, small.copy(), 0.7)]
    dets.append(det(1, template(17, (0, 0)) * [0.5, 0.3, 1] + [1150, 420, 0], 0.6))  # inside the bare crowd
    inp = analysis_input_from_dicts(coco(17, [IMAGE], anns), dets)
    theirs = classify_input(inp, COCO_ANALYZE)
    assert theirs.matched_gt.tolist() == [0, 1, 2, -1]
    assert theirs.counts() == {"good": 17 + 16 + 17, "jitter": 1, "inversion": 0, "swap": 0, "miss": 0}
    sigmas = COCO_ANALYZE.keypoint_sigmas(schema)
    fixed = corrected_keypoints(inp.data, theirs, sigmas, ["jitter"], COCO_ANALYZE)
    # the jitter point moves onto the crowd's point
    assert fixed[1, k, 0] != inp.data.dt_kpts[1, k, 0] and fixed[1, k, 1] == crowd[k, 1]
    mine = classify_input(inp, RAYPOSE)
    assert mine.matched_gt.tolist() == [0, -1, 2, -1]  # the crowd is ignored; the small person counts
    assert mine.counts() == {"good": 34, "jitter": 0, "inversion": 0, "swap": 0, "miss": 0}


@pytest.mark.parametrize("num_kpts", [17, 23])
def test_coco_analyze_rules_use_the_schemas_names_pairs_and_sigmas(num_kpts):
    gt, dets, expected = make_scene(num_kpts)
    inp = analysis_input_from_dicts(gt, dets)
    matched = classify_input(inp, COCO_ANALYZE).matched_gt
    errors = classify_keypoints(inp.data, matched, inp.schema, COCO_ANALYZE)
    np.testing.assert_array_equal(errors.classes[0], [expected[k] for k in range(num_kpts)])
    result = progressive_correction(inp, convention=COCO_ANALYZE)
    assert [s.label for s in result.steps] == list(COCO_ANALYZE.step_labels)
    assert [s.name for s in result.isolated] == ["miss", "swap", "inversion", "jitter", "score", "background_fp",
                                                 "false_negative"]  # fmt: skip
    # errorsAPImpact measures false_neg from bckgd_false_pos, the others from the original
    assert result.isolated[-1].relative_to == "background_fp"
    assert result.steps[-1].result.ap == pytest.approx(1.0, abs=1e-12)


def test_sigmas_are_coco_analyzes_literals_for_17_points_and_the_schemas_otherwise():
    s17, s23 = schema_for(17), schema_for(23)
    literal = COCO_ANALYZE.keypoint_sigmas(s17)
    assert (literal != s17.sigmas).sum() == 5 and np.allclose(literal, s17.sigmas, rtol=1e-15, atol=0)
    assert COCO_ANALYZE.keypoint_sigmas(s23) is s23.sigmas
    assert RAYPOSE.keypoint_sigmas(s17) is s17.sigmas


def test_unknown_convention_names_the_valid_ones():
    assert convention_for("coco-analyze") is COCO_ANALYZE
    with pytest.raises(ConfigError, match="'cocoanalyze'; valid: raypose, coco-analyze"):
        convention_for("cocoanalyze")
    assert list(CONVENTIONS) == ["raypose", "coco-analyze"]


# coco-analyze itself on synthetic_keypoint_case(num_images=60, num_keypoints=17, seed=3): its
# cocoanalyze.py and cocoeval.py ported to Python 3 with no change to their arithmetic, run as its
# scripts run them (run_analysis.py's cut to the 20 best detections per image, the demo notebook's
# cumulative analyze() + summarize() over [32^2, 1e10], errorsAPImpact.py's isolated runs).
RECORDED_ERRORS = {"good": 661, "jitter": 163, "inversion": 18, "swap": 16, "miss": 256}
RECORDED_STEPS = {  # step: (AP, AP50)
    "baseline": (0.14041224193435733, 0.2050209076831874),
    "miss": (0.20384385186907936, 0.2542233153038836),
    "swap": (0.21231228978493602, 0.2659170920357602),
    "inversion": (0.21885540091862182, 0.2659170920357602),
    "jitter": (0.23984528795270096, 0.2659170920357602),
    "score": (0.7633663366336634, 0.801980198019802),
    "bckgd_false_pos": (0.7633663366336634, 0.801980198019802),
    "false_neg": (1.0, 1.0),
}
RECORDED_ALONE = {  # error type: (AP gain, AP50 gain)
    "miss": (0.06343160993472204, 0.04920240762069619),
    "swap": (-0.00039788110600551816, 0.005442569888585741),
    "inversion": (0.0013362497181526017, 0.013362497181526017),
    "jitter": (0.01571965465102036, 0.021250920789512323),
    "score": (0.518993698659702, 0.5474543398415651),
    "bckgd_false_pos": (0.518993698659702, 0.5474543398415651),
    "false_neg": (0.3405940594059406, 0.24752475247524752),
}
RECORDED_FP_FN = [(484, 23), (484, 23), (486, 23), (487, 23), (488, 23), (488, 23), (488, 23), (488, 23),
                  (499, 33), (526, 57)]  # fmt: skip


def test_matches_the_numbers_coco_analyze_itself_gives():
    gt, dets = synthetic_keypoint_case(num_images=60, num_keypoints=17, seed=3)
    result = progressive_correction(analysis_input_from_dicts(gt, dets), convention=COCO_ANALYZE)
    assert result.errors.counts() == RECORDED_ERRORS
    steps = {COCO_ANALYZE.name_of(s.name): (s.result.ap, s.result.ap50) for s in result.steps}
    alone = {COCO_ANALYZE.name_of(s.name): (s.gain_ap, s.gain_ap50) for s in result.isolated}
    for got, want in ((steps, RECORDED_STEPS), (alone, RECORDED_ALONE)):
        assert got.keys() == want.keys()
        for name in want:
            assert got[name] == pytest.approx(want[name], abs=1e-6), name
    counts = [(r["false_positives"], r["false_negatives"]) for r in result.background_per_threshold]
    assert counts == RECORDED_FP_FN
    # raypose's own convention on the same files: official COCO AP, and other numbers
    ours = progressive_correction(analysis_input_from_dicts(gt, dets))
    assert ours.steps[0].result.ap != pytest.approx(RECORDED_STEPS["baseline"][0], abs=1e-3)
