"""Error analysis of keypoint detections (Ronchi & Perona, ICCV 2017), for any keypoint count.

* :mod:`raypose.analysis.data`: ground truth + detections as flat arrays in COCOeval's order;
* :mod:`raypose.analysis.error_types`: per-keypoint classification (good / jitter / inversion / swap /
  miss), corrections, per-detection and per-image OKS, background false positives, missed people;
* :mod:`raypose.analysis.conventions`: raypose's and coco-analyze's (the paper's code) definitions;
* :mod:`raypose.analysis.progressive`: AP after cumulatively correcting each error type, and after
  correcting each on its own;
* :mod:`raypose.analysis.rescoring`: the optimal score (one-to-one, or max OKS + soft-NMS);
* :mod:`raypose.analysis.oracle`: the keypoint head on ground-truth boxes (needs torch);
* :mod:`raypose.analysis.summary`, :mod:`raypose.analysis.gallery`, :mod:`raypose.analysis.report`:
  ``summary.json``, rendered images and ``report.html``.

The CLI is ``raypose analyze GT.json DETS.json --out DIR [--images IMAGES] [--checkpoint CKPT]
[--convention raypose|coco-analyze]``.
"""
