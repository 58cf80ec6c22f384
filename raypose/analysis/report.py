"""``summary.json``, plots, the gallery and ``report.html`` for an error analysis.

Everything goes into one folder; the HTML refers to its plots and gallery images by relative
paths, so it opens from ``file://`` in a browser with no server::

    DIR/summary.json  DIR/per_detection.json  DIR/report.html
    DIR/plots/*.png   DIR/gallery/*.png

Every file that ``summary.json`` and ``report.html`` name is named relative to DIR, or by its
file name alone when it lies outside DIR (the inputs, the checkpoint): the folder is often
written in a temporary place and uploaded, where an absolute path would name nothing.
"""

from __future__ import annotations

import html
import logging
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from raypose.analysis.data import MAX_DETS  # noqa: E402
from raypose.analysis.gallery import (  # noqa: E402
    CATEGORY_HEX,
    DRAW_MIN_SCORE,
    detections_to_draw,
    render_gallery,
)
from raypose.analysis.summary import (  # noqa: E402
    OVERLAP_IOU,
    AnalysisResult,
    per_detection_rows,
    summary_dict,
)
from raypose.io import save_png, write_json_atomic, write_text_atomic  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_MAX_LISTED = 50  # background false positives / missed people rendered in the report
SUMMARY_FILE = "summary.json"  # names inside the report's folder
PER_DETECTION_FILE = "per_detection.json"
REPORT_FILE = "report.html"
# Everything write_report writes into its folder (the CLI refuses an input at one of them).
REPORT_FILES = (SUMMARY_FILE, PER_DETECTION_FILE, REPORT_FILE, "plots/*.png", "gallery/*.png")
STEP_COLORS = ["#ffffff", "#F2E394", "#F2AE72", "#D96459", "#8C4646", "#4F82BD", "#8063A3", "#2E8B57"]


def _save(fig, path: Path) -> Path:
    save_png(fig, path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_progressive_pr(summary: dict, path: Path, key: str = "oks50") -> Path:
    """PR curves after each cumulative correction, the area between consecutive curves filled."""
    curves = summary["pr_curves"]
    recall = np.asarray(curves["recall_thresholds"])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    prev = None
    for n, step in enumerate(summary["progressive"]):
        prec = np.clip(np.asarray(curves[key][step["step"]]), 0, None)
        value = step["ap50"] if key == "oks50" else step["ap"]
        label = f"{step['label']}: {value:.3f}" if value is not None else step["label"]
        ax.plot(recall, prec, color="k", lw=1)
        if prev is not None:
            ax.fill_between(
                recall, prev, prec, where=prec >= prev, color=STEP_COLORS[n % len(STEP_COLORS)], label=label
            )
        else:
            ax.plot([], [], color="k", label=label)
        prev = prec
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
    ax.set_title(
        "PR after cumulative corrections, " + ("OKS 0.5" if key == "oks50" else "mean over OKS 0.50:0.95")
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_gains(summary: dict, path: Path) -> Path:
    steps = summary["progressive"][1:]
    labels = [s["label"] for s in steps]
    x = np.arange(len(steps))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [s["gain_ap"] or 0 for s in steps], 0.4, label="AP gain (OKS .50:.95)")
    ax.bar(x + 0.2, [s["gain_ap50"] or 0 for s in steps], 0.4, label="AP gain (OKS .5)")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("AP gained by correcting")
    ax.set_title("Cumulative: each step after the previous ones")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_isolated_gains(summary: dict, path: Path) -> Path:
    """Bars: the AP gain of each error type corrected on its own, beside its cumulative gain."""
    alone = summary["isolated"]
    cumulative = {s["step"]: s for s in summary["progressive"]}
    x = np.arange(len(alone))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [s["gain_ap"] or 0 for s in alone], 0.4, color="#8063A3", label="on its own")
    ax.bar(
        x + 0.2,
        [cumulative[s["step"]]["gain_ap"] or 0 for s in alone],
        0.4,
        color="#BBBBBB",
        label="cumulative (as in the run)",
    )
    ax.set_xticks(x, [s["label"] for s in alone], rotation=30, ha="right")
    ax.set_ylabel("AP gain (OKS .50:.95)")
    ax.set_title("Each error type corrected on its own, from the original detections")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def isolated_gain_lines(summary: dict) -> list[str]:
    """Markdown lines: a table of the AP gain of each error type corrected on its own, beside its
    gain in the cumulative run, from a ``summary.json`` dict (:func:`raypose.analysis.summary.summary_dict`).

    Returns:
        Lines without trailing newlines: a sentence naming the convention, then the table.
    """
    cumulative = {s["step"]: s for s in summary["progressive"]}
    original = summary["progressive"][0]
    lines = [
        f"AP gain of each error type corrected on its own ({summary['convention']['name']} convention; "
        f"original AP {_md(original['ap'])}, AP50 {_md(original['ap50'])}):",
        "",
        "| error type | AP gain alone | AP50 gain alone | AP gain in the cumulative run | measured from |",
        "|---|---:|---:|---:|---|",
    ]
    for s in summary["isolated"]:
        run = cumulative.get(s["step"], {})
        lines.append(
            f"| {s['label']} | {_md(s['gain_ap'], True)} | {_md(s['gain_ap50'], True)} | "
            f"{_md(run.get('gain_ap'), True)} | {s['relative_to']} |"
        )
    return lines


def _md(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def plot_original_pr(summary: dict, path: Path) -> Path:
    curves = summary["pr_curves"]
    recall = np.asarray(curves["recall_thresholds"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    cmap = plt.get_cmap("viridis")
    for n, (t, prec) in enumerate(curves["original_per_oks"].items()):
        ax.plot(recall, np.clip(prec, 0, None), color=cmap(n / 9), label=f"OKS {t}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision", title="Original detections")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_error_breakdown(summary: dict, path: Path) -> Path:
    """Stacked bars: share of each category per keypoint type, and overall."""
    names = [*summary["keypoint_names"], "ALL"]
    rows = [*[summary["per_keypoint"][n] for n in summary["keypoint_names"]], summary["errors"]]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.2))
    left = np.zeros(len(names))
    for cat in summary["error_types"]:
        counts = np.array([r[cat] for r in rows], dtype=float)
        totals = np.array([max(sum(r.values()), 1) for r in rows], dtype=float)
        ax.barh(names, counts / totals, left=left, color=CATEGORY_HEX[cat], label=cat, edgecolor="k", lw=0.3)
        left += counts / totals
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of matched keypoints")
    ax.legend(ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8)
    return _save(fig, path)


def plot_oks_loss(
    summary: dict, path: Path, key: str = "oks_loss_share", title: str = "Share of OKS lost"
) -> Path:
    names = summary["keypoint_names"]
    values = [summary[key][n] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(np.arange(len(names)), values, color="#4F82BD")
    ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_oks_histograms(result: AnalysisResult, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    det_oks = result.det_oks[np.isfinite(result.det_oks)]
    axes[0].hist(det_oks, bins=np.linspace(0, 1, 21), color="#8C4646")
    axes[0].set(title="OKS of matched detections", xlabel="OKS", ylabel="detections")
    axes[1].hist(result.image_oks, bins=np.linspace(0, 1, 21), color="#2E8B57")
    axes[1].set(title="Image score (see Worst images)", xlabel="image score", ylabel="images")
    return _save(fig, path)


def _table(headers: list[str], rows: list[list[Any]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    attr = f' id="{table_id}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "&ndash;"
    return html.escape(str(value))


def _figure(src: str, caption: str, css: str = "plot") -> str:
    return f'<figure class="{css}"><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


_CSS = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #bbb;padding:2px 8px;text-align:right;font-size:13px}
th{background:#eee}
figure{display:inline-block;margin:4px;vertical-align:top}
figure.plot img{max-width:680px}
figure.gallery img{max-width:640px;border:1px solid #888}
figcaption{font-size:12px;color:#444}
.legend span{display:inline-block;padding:1px 8px;margin-right:4px;border:1px solid #555;font-size:12px}
"""

# Counts the images that actually decoded; the headless-browser test reads these spans.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.getElementById('images-total').textContent = String(imgs.length);
  document.getElementById('images-loaded').textContent = String(ok);
});
"""


def _legend() -> str:
    items = "".join(f'<span style="background:{c}">{html.escape(n)}</span>' for n, c in CATEGORY_HEX.items())
    return (
        f'<p class="legend">Ground truth: <b style="color:#3ce63c">green</b>; predictions: '
        f'<b style="color:#e63ce6">magenta</b>, only the image&rsquo;s N highest-scoring detections '
        f"(N = its people), any scoring &ge; {DRAW_MIN_SCORE:g}, those matched to a person and the red-boxed "
        f"false positive (box label: detection score; number "
        f"beside a point: its keypoint score); predicted points coloured by category: {items}</p>"
    )


def _convention_section(summary: dict) -> list[str]:
    name = summary["convention"]["name"]
    rows = [
        [f"({d['item']}) {d['what']}", d["raypose"], d["coco-analyze"]]
        for d in summary["convention"]["differences"]
    ]
    return [
        '<h2 id="convention">Convention</h2>',
        f"<p>This report follows the <b>{html.escape(name)}</b> convention (<code>raypose analyze "
        f"--convention {html.escape(name)}</code>). The two conventions differ in:</p>",
        _table(
            ["", *(f"{c} (this report)" if c == name else c for c in ("raypose", "coco-analyze"))],
            rows,
            "convention-table",
        ),
        "<p>Both give each error type on its own beside the cumulative run (coco-analyze's "
        "<code>errorsAPImpact</code>). The image score and the worst images use COCO's matching in both.</p>",
    ]


def _sections(summary: dict, files: dict[str, Any], max_listed: int) -> list[str]:
    ev = summary["evaluation"]
    cumulative = {s["step"]: s for s in summary["progressive"]}
    area = summary["convention"]["area_range"]
    parts = [
        "<h1>raypose error analysis</h1>",
        f"<p>Ground truth <code>{html.escape(summary['ground_truth'])}</code>, detections "
        f"<code>{html.escape(summary['detections'])}</code>: {summary['num_images']} images, "
        f"{summary['num_people']} people, {summary['num_detections']} detections ({MAX_DETS} best per image), "
        f"{summary['num_keypoints']} keypoints.</p>",
        f'<p id="convention-used">Convention: <b>{html.escape(summary["convention"]["name"])}</b> '
        f'(area range [{area[0]:g}, {area[1]:g}] px²; <a href="#convention">differences</a>).</p>',
        _table(
            ["AP (OKS .50:.95)", "AP50", "AP75", "AR"],
            [[ev["ap"], ev["ap50"], ev["ap75"], ev["recall"]]],
            "evaluation",
        ),
        '<h2 id="errors">Keypoint errors</h2>',
        "<p>Keypoints of detections matched at OKS &ge; 0.1, by keypoint similarity ks: good (ks &ge; 0.85 to "
        "its own point), jitter (0.5 &le; ks &lt; 0.85), inversion (ks &ge; 0.5 to the left/right counterpart, "
        "better than to its own), swap (ks &ge; 0.5 to another person's point), miss (ks &lt; 0.5 to all).</p>",
        _table(
            ["", *summary["error_types"]],
            [["all", *[summary["errors"][c] for c in summary["error_types"]]]]
            + [
                [n, *[summary["per_keypoint"][n][c] for c in summary["error_types"]]]
                for n in summary["keypoint_names"]
            ],
            "error-counts",
        ),
        _figure(files["plots"]["error_breakdown"], "Error categories per keypoint type"),
        _figure(files["plots"]["oks_loss"], "Share of the OKS lost by matched detections, per keypoint type"),
        _figure(files["plots"]["oks_histograms"], "OKS distributions"),
        '<h2 id="progressive">Progressive correction</h2>',
        "<p>AP after correcting, cumulatively, each error type; the biggest gain is the error to attack first.</p>",
        _table(
            ["step", "AP", "AP gain", "AP50", "AP50 gain"],
            [[s["label"], s["ap"], s["gain_ap"], s["ap50"], s["gain_ap50"]] for s in summary["progressive"]],
            "progressive-table",
        ),
        _figure(files["plots"]["progressive_oks50"], "PR at OKS 0.5 after each correction"),
        _figure(files["plots"]["progressive_mean"], "PR averaged over OKS 0.50:0.95 after each correction"),
        _figure(files["plots"]["gains"], "AP gain per correction step"),
        _figure(
            files["plots"]["isolated_gains"], "AP gain of each error type alone and in the cumulative run"
        ),
        '<h2 id="isolated">Each error type on its own</h2>',
        "<p>AP after correcting one error type only, from the original detections (coco-analyze's "
        "<code>errorsAPImpact</code>), beside its gain in the cumulative run (bar chart above).</p>",
        _table(
            ["error type", "AP", "AP gain", "AP50 gain", "gain in the cumulative run", "measured from"],
            [
                [
                    s["label"],
                    s["ap"],
                    s["gain_ap"],
                    s["gain_ap50"],
                    cumulative[s["step"]]["gain_ap"],
                    s["relative_to"],
                ]
                for s in summary["isolated"]
            ],
            "isolated-table",
        ),
        _figure(files["plots"]["original_pr"], "Original PR curves"),
        *_convention_section(summary),
    ]
    if "oracle" in summary:
        parts += _oracle_section(summary, files)
    parts += _worst_section(summary, files)
    parts += _background_fp_section(summary, files, max_listed)
    parts += _false_negative_section(summary, files, max_listed)
    return parts


def _oracle_section(summary: dict, files: dict[str, Any]) -> list[str]:
    o = summary["oracle"]
    rows = [
        ["model detections", o["detections"]["ap"], o["detections"]["ap50"], o["detections"]["ap75"]],
        [
            "ground-truth boxes (oracle)",
            o["oracle_boxes"]["ap"],
            o["oracle_boxes"]["ap50"],
            o["oracle_boxes"]["ap75"],
        ],
    ]
    parts = [
        '<h2 id="oracle">Oracle boxes</h2>',
        "<p>The keypoint head run on the ground-truth boxes: the AP it reaches is what perfect person "
        "detection would give; the gap to the model's own detections is the detection error, the gap "
        "from the oracle to 1 is keypoint error.</p>",
        _table(["", "AP", "AP50", "AP75"], rows, "oracle-table"),
    ]
    if "oracle_loss" in files["plots"]:
        parts.append(_figure(files["plots"]["oracle_loss"], "Share of OKS lost per keypoint, oracle boxes"))
    return parts


# What error_types.image_oks computes, in words; the worst-images list is ranked by it.
_IMAGE_SCORE_DEFINITION = (
    "Images are ranked by their <b>image score</b>, lowest first (ties by image id; images with neither "
    "people nor detections are left out). The image score is the sum of the OKS of the image&rsquo;s "
    "detections matched to a person (COCO&rsquo;s greedy matching, highest score first, at OKS &ge; "
    "{loc:g}, all areas), divided by the number of people who count (not crowd, at least one labelled "
    "keypoint) plus the sum of the scores of the detections matched to nobody. A missed person adds 1 "
    "below the line and nothing above it; a false positive adds its score below the line, so a "
    "confident false positive costs more than an unsure one; a detection matched to a crowd region or "
    "an unlabelled person counts for nothing. An image without people who count scores 1 / (1 + the "
    "sum of the scores of its detections matched to nobody). Only each image&rsquo;s {max_dets} best "
    "detections take part. A perfect image scores 1; it is not COCO&rsquo;s AP, and it is the same whichever "
    "convention the report follows."
)


def _worst_section(summary: dict, files: dict[str, Any]) -> list[str]:
    worst = summary["worst_images"]
    loc = summary["thresholds"]["localisation_oks"]
    parts = [
        f'<h2 id="worst">Worst {len(worst)} images</h2>',
        f'<p id="worst-definition">{_IMAGE_SCORE_DEFINITION.format(loc=loc, max_dets=MAX_DETS)}</p>',
        _table(
            [
                "rank",
                "image",
                "file",
                "image score",
                "sum of OKS of matched detections",
                "people",
                "sum of scores of unmatched detections",
                "detections",
                "drawn",
            ],
            [
                [
                    rank + 1,
                    r["image_id"],
                    r["file_name"],
                    r["image_score"],
                    r["matched_oks_sum"],
                    r["num_people"],
                    r["unmatched_score_sum"],
                    r["num_detections"],
                    r.get("num_drawn"),
                ]
                for rank, r in enumerate(worst)
            ],
            "worst-table",
        ),
        _legend(),
        '<div id="gallery">',
    ]
    for row, src in zip(worst, files["gallery"]["worst"]):
        caption = (
            f"image {row['image_id']} ({row['file_name']}): image score {row['image_score']:.3f}, "
            f"{row['num_people']} people, {row['num_detections']} detections"
        )
        if row.get("num_drawn") is not None:
            caption += f" ({row['num_drawn']} drawn)"
        parts.append(_figure(src, caption, "gallery"))
    parts.append("</div>")
    return parts


def _listed(what: str, shown: int, total: int, where: str) -> str:
    """A sentence saying how many rows of ``total`` the table shows, and where all of them are."""
    if shown < total:
        return f"The table shows the {shown} {what} of {total}; all {total} are in {where}."
    return f"The table shows all {total}; they are also in {where}."


def _background_fp_section(summary: dict, files: dict[str, Any], max_listed: int) -> list[str]:
    fps = summary["background_false_positives"]
    shown = fps[:max_listed]
    per_det = html.escape(files["per_detection"])
    return [
        f'<h2 id="background-fp">Background false positives ({len(fps)})</h2>',
        '<p id="fp-note">Detections matched to nobody at any OKS threshold, highest score first (red box '
        "in the pictures below). "
        + _listed(
            "highest-scoring",
            len(shown),
            len(fps),
            f'<a href="{per_det}">{per_det}</a> (the rows with <code>background_fp</code> true, among '
            "every kept detection) and in summary.json (<code>background_false_positives</code>)",
        )
        + " Detection # is the detection&rsquo;s position in the detections file, from 0; the best OKS and "
        "IoU are with any person who counts on the image, matched or not (a box is the extent of the "
        "detection&rsquo;s keypoints; the person&rsquo;s is its annotated box).</p>",
        _table(
            [
                "image",
                "detection #",
                "score",
                "best OKS to any person",
                "best box IoU to any person",
                f"overlaps a person (box IoU ≥ {OVERLAP_IOU:g})",
            ],
            [
                [
                    r["image_id"],
                    r["detection_index"],
                    r["score"],
                    r["best_oks"],
                    r["best_iou"],
                    r["overlaps_person"],
                ]
                for r in shown
            ],
            "fp-table",
        ),
        *(
            _figure(src, f"false positive {n + 1}", "gallery")
            for n, src in enumerate(files["gallery"]["background_fp"])
        ),
    ]


def _false_negative_section(summary: dict, files: dict[str, Any], max_listed: int) -> list[str]:
    fns = summary["false_negatives"]
    shown = fns[:max_listed]
    return [
        f'<h2 id="false-negatives">Missed people ({len(fns)})</h2>',
        '<p id="fn-note">Labelled people matched at no OKS threshold, largest first (red box). '
        + _listed("largest", len(shown), len(fns), "summary.json (<code>false_negatives</code>)")
        + "</p>",
        _table(
            ["image", "annotation", "labelled keypoints", "area"],
            [[r["image_id"], r["annotation_id"], r["num_keypoints"], r["area"]] for r in shown],
            "fn-table",
        ),
        *(
            _figure(src, f"missed person {n + 1}", "gallery")
            for n, src in enumerate(files["gallery"]["false_negative"])
        ),
    ]


def render_html(summary: dict, files: dict[str, Any], max_listed: int = DEFAULT_MAX_LISTED) -> str:
    """The report page; ``files`` holds the paths (relative to the report) of the plots, the
    gallery images and ``per_detection``; the tables of background false positives and missed
    people show the first ``max_listed`` rows."""
    body = "\n".join(_sections(summary, files, max_listed))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>raypose error analysis</title>'
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>\n{body}\n"
        '<p id="status">images shown: <span id="images-loaded">?</span> of <span id="images-total">?</span></p>'
        "</body></html>\n"
    )


def _listed_images(result: AnalysisResult, max_listed: int) -> tuple[dict, dict]:
    """Images (positions) to render for background false positives and missed people, with highlights."""
    data = result.inp.data
    fp_index = np.flatnonzero(result.progressive.background_fp)
    fp_index = fp_index[np.argsort(-data.dt_scores[fp_index], kind="stable")][:max_listed]
    fn_index = np.flatnonzero(result.progressive.false_negative)
    fn_index = fn_index[np.argsort(-data.gt_areas[fn_index], kind="stable")][:max_listed]
    fps = {int(data.dt_img[n]): ([int(n)], []) for n in fp_index[::-1]}  # first listed wins
    fns = {int(data.gt_img[g]): ([], [int(g)]) for g in fn_index[::-1]}
    return fps, fns


def report_name(path: str, out_dir: str | Path) -> str:
    """How ``summary.json`` and ``report.html`` name ``path``: relative to ``out_dir`` (POSIX
    separators) when it lies inside it, else its file name alone. Placeholders such as
    ``"<detections>"`` (inputs that came as dicts, not files) are kept as they are."""
    if path.startswith("<"):
        return path
    target, base = Path(os.path.abspath(path)), Path(os.path.abspath(out_dir))
    try:
        return target.relative_to(base).as_posix()
    except ValueError:
        return target.name


def write_report(
    result: AnalysisResult,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    max_listed: int = DEFAULT_MAX_LISTED,
) -> dict[str, Path]:
    """Write ``summary.json``, ``per_detection.json``, plots, gallery and ``report.html`` into ``out_dir``.

    Inside the written files every path is relative to ``out_dir`` (:func:`report_name`), so the
    folder can be moved or uploaded.

    Returns:
        ``{"summary": ..., "per_detection": ..., "report": ...}``: absolute paths of the three main
        files, ``out_dir`` made absolute joined with :data:`SUMMARY_FILE`, :data:`PER_DETECTION_FILE`
        and :data:`REPORT_FILE`; relative to ``out_dir`` they are those names.
    """
    out_dir = Path(os.path.abspath(out_dir))
    images_dir = Path(images_dir) if images_dir is not None else None
    summary = summary_dict(result)
    summary["ground_truth"] = report_name(summary["ground_truth"], out_dir)
    summary["detections"] = report_name(summary["detections"], out_dir)
    if summary.get("oracle", {}).get("checkpoint"):
        summary["oracle"] = {
            **summary["oracle"],
            "checkpoint": report_name(summary["oracle"]["checkpoint"], out_dir),
        }
    plots = _write_plots(result, summary, out_dir / "plots")
    fps, fns = _listed_images(result, max_listed)
    gallery = {
        "worst": render_gallery(result, out_dir, list(result.worst), images_dir, "worst"),
        "background_fp": render_gallery(result, out_dir, list(fps), images_dir, "fp", fps),
        "false_negative": render_gallery(result, out_dir, list(fns), images_dir, "fn", fns),
    }
    for row, image in zip(summary["worst_images"], result.worst):
        row["num_drawn"] = int(len(detections_to_draw(result, int(image))))
    files = {
        "plots": {k: p.relative_to(out_dir).as_posix() for k, p in plots.items()},
        "gallery": gallery,
        "per_detection": PER_DETECTION_FILE,
    }
    summary["files"] = {**files, "report": REPORT_FILE}
    paths = {
        "per_detection": write_json_atomic(out_dir / PER_DETECTION_FILE, per_detection_rows(result)),
        "summary": write_json_atomic(out_dir / SUMMARY_FILE, summary, indent=1),
        "report": write_text_atomic(out_dir / REPORT_FILE, render_html(summary, files, max_listed)),
    }
    logger.info("wrote %s", paths["report"])
    return paths


def _write_plots(result: AnalysisResult, summary: dict, plots_dir: Path) -> dict[str, Path]:
    plots = {
        "progressive_oks50": plot_progressive_pr(summary, plots_dir / "progressive_pr_oks50.png", "oks50"),
        "progressive_mean": plot_progressive_pr(
            summary, plots_dir / "progressive_pr_mean.png", "mean_over_oks"
        ),
        "gains": plot_gains(summary, plots_dir / "progressive_gains.png"),
        "isolated_gains": plot_isolated_gains(summary, plots_dir / "isolated_gains.png"),
        "original_pr": plot_original_pr(summary, plots_dir / "original_pr.png"),
        "error_breakdown": plot_error_breakdown(summary, plots_dir / "error_breakdown.png"),
        "oks_loss": plot_oks_loss(summary, plots_dir / "oks_loss_share.png"),
        "oks_histograms": plot_oks_histograms(result, plots_dir / "oks_histograms.png"),
    }
    if "oracle" in summary and summary["oracle"].get("oks_loss_share"):
        oracle_view = {
            "keypoint_names": summary["keypoint_names"],
            "share": summary["oracle"]["oks_loss_share"],
        }
        plots["oracle_loss"] = plot_oks_loss(
            oracle_view, plots_dir / "oracle_oks_loss_share.png", "share", "Share of OKS lost, oracle boxes"
        )
    return plots
