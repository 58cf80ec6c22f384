"""The quickstart as a new user runs it, timed and repeated (not a test).

Runs ``raypose tune search_spaces/quickstart.yaml`` ``--runs`` times (default 2), one after the
other, each in a fresh folder holding copies of ``configs/`` and ``search_spaces/`` (so each
generates its own data and MLflow store), and checks the quickstart's promises:

- the best trial's held-out OKS AP (the 30 validation images no trial was scored on) is at least ``--min-ap`` (0.30);
- it beats the default-recipe trial by at least ``--min-gain`` (0.05, on the same held-out images);
- each run takes at most ``--max-minutes`` (10) of wall time;
- the runs land within ``--tolerance`` (0.05) of each other.

Prints one JSON line per run and a verdict; exits 1 when a promise is broken.

Usage::

    python benchmarks/bench_quickstart.py [--runs 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_once(folder: Path) -> dict:
    for name in ("configs", "search_spaces"):
        shutil.copytree(REPO / name, folder / name)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "raypose", "tune", "search_spaces/quickstart.yaml"], cwd=folder,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    (folder / "stdout.log").write_text(proc.stdout)
    (folder / "stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"raypose tune failed (exit {proc.returncode}) in {folder}:\n{proc.stderr[-3000:]}")
    summary = json.loads((folder / "runs" / "quickstart" / "best" / "metrics.json").read_text())
    base = summary.get("baseline_validation") or {}
    return {
        "wall_s": round(wall, 1),
        "best_trial": summary["best_trial"],
        "best_config": summary["best_config"],
        "best_val_AP": round(summary["validation"]["AP"], 4),
        "baseline_val_AP": round(base["AP"], 4) if base else None,
        "best_search_oks_map": round(summary["search_oks_map"], 4),
        "baseline_search_oks_map": summary["baseline_oks_map"],
        "trial_epochs_saved": summary["trial_epochs_saved"],
        "last_line": proc.stdout.strip().splitlines()[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="how many times to run the quickstart (default 2)")
    parser.add_argument("--min-ap", type=float, default=0.30, help="least held-out AP of the best trial")
    parser.add_argument("--min-gain", type=float, default=0.05, help="least AP gain over the default recipe")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="most wall time per run")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest AP difference between runs")
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder, removed)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="raypose-quickstart-"))
    results = []
    try:
        for i in range(args.runs):
            folder = root / f"run{i + 1}"
            folder.mkdir(parents=True)
            results.append(run_once(folder))
            print(json.dumps(results[-1]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    broken = []
    for i, r in enumerate(results, 1):
        if r["best_val_AP"] < args.min_ap:
            broken.append(f"run {i}: best AP {r['best_val_AP']} < {args.min_ap}")
        if r["baseline_val_AP"] is None or r["best_val_AP"] - r["baseline_val_AP"] < args.min_gain:
            broken.append(f"run {i}: gain over the default recipe below {args.min_gain}")
        if r["wall_s"] > 60 * args.max_minutes:
            broken.append(f"run {i}: {r['wall_s']} s > {args.max_minutes} min")
    aps = [r["best_val_AP"] for r in results]
    if max(aps) - min(aps) > args.tolerance:
        broken.append(f"runs differ by {max(aps) - min(aps):.4f} AP > {args.tolerance}")
    print(json.dumps({"runs": len(results), "best_val_AP": aps, "spread": round(max(aps) - min(aps), 4),
                      "wall_s": [r["wall_s"] for r in results], "broken": broken}))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
