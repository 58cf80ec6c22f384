"""The two conventions of the error analysis: raypose's own, and coco-analyze's (the paper's code).

Ronchi and Perona's coco-analyze (github.com/matteorr/coco-analyze) and raypose agree on the
method but differ in six conventions, each of which changes numbers:

a. area range: coco-analyze's "all" is ``[32^2, 1e10]`` (unmatched detections and people smaller
   than 32^2 are ignored); raypose's is ``[0, 1e10]``, COCO's own (its AP is official COCO AP);
b. where a corrected keypoint lands: coco-analyze moves it to ``sqrt(-ln(ks) 2 area sigma^2)``
   from the ground truth, but OKS's variance is ``(2 sigma)^2``, so it lands at ``ks^(1/4)``
   (jitter at 0.96 instead of 0.85, a miss at 0.84 instead of 0.5); raypose lands on ``ks``;
c. background errors: coco-analyze ignores, at each OKS threshold, the detections and people
   unmatched *at that threshold* (so "w/o FN" is 1 by construction); raypose removes only the
   detections and people matched at no threshold;
d. optimal score: coco-analyze rescores a detection by its best OKS with a person in the area
   range, then decays duplicates with Gaussian soft-NMS (``exp(-oks^2 / 0.5)``, OKS between
   detections); raypose assigns detections one-to-one to people (Hungarian, max total OKS) and
   scores the unassigned 0;
e. ties and the good threshold: coco-analyze breaks ties own point > another person's point >
   own left/right counterpart, and good needs ``ks > 0.85`` (a point at exactly 0.85 gets no
   category); raypose: own > counterpart > other person, good is ``ks >= 0.85``;
f. ignored people: coco-analyze classifies and corrects detections matched to ignored people
   that have keypoints (a crowd with keypoints, a person outside the area range); raypose only
   those matched to people who count.

coco-analyze also reports each error type corrected on its own (``errorsAPImpact.py``); both
conventions give that beside the cumulative run. :data:`CONVENTIONS` maps a name to its rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raypose.errors import ConfigError
from raypose.schema import KeypointSchema

# Canonical step keys, in the order of the cumulative run; each convention names them its own way.
STEP_KEYS: tuple[str, ...] = (
    "original", "miss", "swap", "inversion", "jitter", "score", "background_fp", "false_negative",
)  # fmt: skip
# coco-analyze's Params.sigmas, written as literals: five of them differ by one ulp from
# pycocotools' ``.26 / 10`` (which its COCOeval, hence its OKS, uses), so its ks does too.
COCO_ANALYZE_SIGMAS = np.array(
    [.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089]
)  # fmt: skip


@dataclass(frozen=True)
class Convention:
    """The rules one convention follows (see the module docstring for a-f)."""

    name: str
    area_range: tuple[float, float]  # (a) pixels^2, lower and upper bound of "all"
    landing_variance: str  # (b) "oks": (2 sigma)^2, lands at the target ks; "sigma": sigma^2
    tie_order: str  # (e) "own-inversion-other" or "own-other-inversion"
    good_includes_threshold: bool  # (e) ks == 0.85 is good (True) or nothing (False)
    classify_ignored: bool  # (f) classify detections matched to ignored people with keypoints
    rescoring: str  # (d) "one-to-one" or "max-oks-soft-nms"
    background: str  # (c) "every-threshold" or "per-threshold"
    step_names: tuple[str, ...]  # names of STEP_KEYS in summary.json
    step_labels: tuple[str, ...]  # labels of STEP_KEYS in tables and plots

    @property
    def area(self) -> np.ndarray:
        """(1, 2) area range as :func:`raypose.evaluation.fast.match` takes it."""
        return np.array([self.area_range], dtype=np.float64)

    def name_of(self, key: str) -> str:
        return self.step_names[STEP_KEYS.index(key)]

    def label_of(self, key: str) -> str:
        return self.step_labels[STEP_KEYS.index(key)]

    def keypoint_sigmas(self, schema: KeypointSchema) -> np.ndarray:
        """(K,) sigmas of per-keypoint similarity, corrections and soft-NMS (OKS keeps the schema's).

        coco-analyze writes the 17 COCO sigmas as literals; with 17 points its convention uses
        them, with any other schema the schema's own.
        """
        if self.name == "coco-analyze" and schema.num_keypoints == len(COCO_ANALYZE_SIGMAS):
            return COCO_ANALYZE_SIGMAS
        return schema.sigmas


RAYPOSE = Convention(
    name="raypose",
    area_range=(0.0, 1e5**2),
    landing_variance="oks",
    tie_order="own-inversion-other",
    good_includes_threshold=True,
    classify_ignored=False,
    rescoring="one-to-one",
    background="every-threshold",
    step_names=STEP_KEYS,
    step_labels=(
        "Original",
        "Miss",
        "Swap",
        "Inversion",
        "Jitter",
        "Optimal score",
        "Background FP",
        "False negatives",
    ),  # fmt: skip
)
COCO_ANALYZE = Convention(
    name="coco-analyze",
    area_range=(32.0**2, 1e5**2),
    landing_variance="sigma",
    tie_order="own-other-inversion",
    good_includes_threshold=False,
    classify_ignored=True,
    rescoring="max-oks-soft-nms",
    background="per-threshold",
    # coco-analyze's own err_types and plot labels (cocoanalyze.py, errorsAPImpact.py)
    step_names=("baseline", "miss", "swap", "inversion", "jitter", "score", "bckgd_false_pos", "false_neg"),
    step_labels=(
        "Orig. Dts.",
        "w/o Miss",
        "w/o Swap",
        "w/o Inv.",
        "w/o Jit.",
        "Opt. Score",
        "w/o Bkg. FP",
        "w/o FN",
    ),  # fmt: skip
)
CONVENTIONS: dict[str, Convention] = {c.name: c for c in (RAYPOSE, COCO_ANALYZE)}
DEFAULT_CONVENTION = RAYPOSE.name

# (letter, what, raypose, coco-analyze): the table report.html shows.
DIFFERENCES: tuple[tuple[str, str, str, str], ...] = (
    ("a", "area range of \"all\"", "[0, 1e10] px², COCO's (official AP)",
     "[32², 1e10]: people and unmatched detections under 32² are ignored"),
    ("b", "where a corrected keypoint lands", "at the target ks (jitter 0.85, miss 0.5)",
     "at ks^(1/4) (jitter 0.96, miss 0.84): sigma² where OKS has (2 sigma)²"),
    ("c", "background FP / false negatives", "those matched at no OKS threshold",
     "those unmatched at each threshold, per threshold (w/o FN = 1 by construction)"),
    ("d", "optimal score", "one-to-one assignment to people (Hungarian), unassigned 0",
     "best OKS with a person, then Gaussian soft-NMS between detections"),
    ("e", "ties; ks exactly 0.85", "own > left/right counterpart > other person; good",
     "own > other person > counterpart; no category"),
    ("f", "detections on ignored people with keypoints", "not classified",
     "classified and corrected (crowds with keypoints, people outside the area range)"),
)  # fmt: skip


def convention_for(name: str) -> Convention:
    """The :class:`Convention` called ``name``.

    Raises:
        ConfigError: ``name`` is not one of :data:`CONVENTIONS`.
    """
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ConfigError(f"unknown analysis convention {name!r}; valid: {', '.join(CONVENTIONS)}") from None
