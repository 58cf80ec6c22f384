"""``summary.json``, plots, the gallery and ``report.html`` for an error analysis.

Everything goes into one folder; the HTML refers to its plots and gallery images by relative
paths, so it opens from ``file://`` in a browser with no server::

    DIR/summary.json  DIR/per_detection.json  DIR/report.html
    DIR/plots/*.png   DIR/gallery/*.png
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from raypose.analysis.gallery import CATEGORY_HEX, render_gallery  # noqa: E402
from raypose.analysis.summary import AnalysisResult, per_detection_rows, summary_dict  # noqa: E402
from raypose.io import save_png, write_json_atomic, write_text_atomic  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_MAX_LISTED = 50  # background false positives / missed people rendered in the report
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
    axes[1].set(title="Per-image OKS score", xlabel="image OKS", ylabel="images")
    return _save(fig, path)


def _table(headers: list[str], rows: list[list[Any]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    attr = f' id="{table_id}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
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
figure.gallery img{max-width:420px;border:1px solid #888}
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
        f'<b style="color:#e63ce6">magenta</b> (box label: detection score; number beside a point: its '
        f"keypoint score); predicted points coloured by category: {items}</p>"
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
        "<code>errorsAPImpact</code>). Per-image OKS and the worst images use COCO's matching in both.</p>",
    ]


def _sections(summary: dict, files: dict[str, Any]) -> list[str]:
    ev = summary["evaluation"]
    cumulative = {s["step"]: s for s in summary["progressive"]}
    area = summary["convention"]["area_range"]
    parts = [
        "<h1>raypose error analysis</h1>",
        f"<p>Ground truth <code>{html.escape(summary['ground_truth'])}</code>, detections "
        f"<code>{html.escape(summary['detections'])}</code>: {summary['num_images']} images, "
        f"{summary['num_people']} people, {summary['num_detections']} detections (20 best per image), "
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
    parts += _gallery_sections(summary, files)
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


def _gallery_sections(summary: dict, files: dict[str, Any]) -> list[str]:
    worst = summary["worst_images"]
    parts = [f'<h2 id="worst">Worst {len(worst)} images</h2>', _legend(), '<div id="gallery">']
    for row, src in zip(worst, files["gallery"]["worst"]):
        caption = f"image {row['image_id']} ({row['file_name']}): OKS {row['oks']:.3f}, {row['num_people']} people, {row['num_detections']} detections"
        parts.append(_figure(src, caption, "gallery"))
    parts.append("</div>")
    fps = summary["background_false_positives"]
    parts += [
        f'<h2 id="background-fp">Background false positives ({len(fps)})</h2>',
        "<p>Detections matched to nobody at any OKS threshold, highest score first (red box).</p>",
        _table(
            ["image", "detection #", "score", "best OKS", "near a person (OKS &ge; 0.1)"],
            [
                [r["image_id"], r["detection_index"], r["score"], r["best_oks"], r["matched_at_0.1"]]
                for r in fps[:500]
            ],
            "fp-table",
        ),
    ]
    parts += [
        _figure(src, f"false positive {n + 1}", "gallery")
        for n, src in enumerate(files["gallery"]["background_fp"])
    ]
    fns = summary["false_negatives"]
    parts += [
        f'<h2 id="false-negatives">Missed people ({len(fns)})</h2>',
        "<p>Labelled people matched at no OKS threshold, largest first (red box).</p>",
        _table(
            ["image", "annotation", "labelled keypoints", "area"],
            [[r["image_id"], r["annotation_id"], r["num_keypoints"], r["area"]] for r in fns[:500]],
            "fn-table",
        ),
    ]
    parts += [
        _figure(src, f"missed person {n + 1}", "gallery")
        for n, src in enumerate(files["gallery"]["false_negative"])
    ]
    return parts


def render_html(summary: dict, files: dict[str, Any]) -> str:
    """The report page; ``files`` holds the relative paths of plots and gallery images."""
    body = "\n".join(_sections(summary, files))
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


def write_report(
    result: AnalysisResult,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    max_listed: int = DEFAULT_MAX_LISTED,
) -> dict[str, Path]:
    """Write ``summary.json``, ``per_detection.json``, plots, gallery and ``report.html`` into ``out_dir``.

    Returns:
        Paths of the main files (``summary``, ``report``, ``per_detection``).
    """
    out_dir = Path(out_dir)
    images_dir = Path(images_dir) if images_dir is not None else None
    summary = summary_dict(result)
    plots_dir = out_dir / "plots"
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
    fps, fns = _listed_images(result, max_listed)
    gallery = {
        "worst": render_gallery(result, out_dir, list(result.worst), images_dir, "worst"),
        "background_fp": render_gallery(result, out_dir, list(fps), images_dir, "fp", fps),
        "false_negative": render_gallery(result, out_dir, list(fns), images_dir, "fn", fns),
    }
    files = {"plots": {k: str(p.relative_to(out_dir)) for k, p in plots.items()}, "gallery": gallery}
    summary["files"] = {**files, "per_detection": "per_detection.json", "report": "report.html"}
    paths = {
        "per_detection": write_json_atomic(out_dir / "per_detection.json", per_detection_rows(result)),
        "summary": write_json_atomic(out_dir / "summary.json", summary, indent=1),
        "report": write_text_atomic(out_dir / "report.html", render_html(summary, files)),
    }
    logger.info("wrote %s", paths["report"])
    return paths
