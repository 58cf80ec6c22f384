"""What a lost Train worker costs (not a test): wall time and steps trained again.

Starts a two-node Ray cluster on loopback (each node its own session folder, 2 CPUs) and runs
the same 2-worker ``raypose train`` three times: uninterrupted; with one Train worker killed
(SIGKILL) after step 4 of epoch 2 when checkpoints are written at epoch ends only; and the same
kill with ``checkpoint_every_min`` set, so a checkpoint lands inside the epoch. Every run logs
each optimizer step (``log_every: 1``), so the steps trained are counted from its output; the
steps retrained are those beyond an uninterrupted run's. Everything it starts is stopped by
handle.

Usage::

    python benchmarks/bench_worker_fault.py [--every-min 0.02]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.clusters import add_worker_node, node_env, start_head  # noqa: E402
from tests.conftest import TINY_MODEL  # noqa: E402

STEP_LINE = re.compile(r"epoch (\d+) step (\d+)/(\d+) loss")
EPOCHS, KILL_AT = 3, (1, 4)  # 0-based epoch index as the loop logs it: epoch 2, after step 4


def config(folder: Path, data_root: Path, name: str, every_min: float | None) -> Path:
    raw = {
        "name": name, "storage_path": str(folder / "runs"), "epochs": EPOCHS, "batch_size": 2, "workers": 2,
        "amp": False, "eval_batch_size": 4, "log_every": 1, "model": dict(TINY_MODEL), "use_gpu": False,
        "data": {"root": str(data_root), "kind": "synthetic", "loader_workers": 0, "val_limit": 4,
                 "synth": {"train": 24, "val": 4, "seed": 3, "image_size": [128, 160]}},
        "optim": {"name": "adamw", "lr": 0.001}, "schedule": {"name": "onecycle"}, "mlflow": {"enabled": False},
    }
    if every_min is not None:
        raw["checkpoint_every_min"] = every_min
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(cluster, path: Path, kill: bool) -> dict:
    start = time.monotonic()
    env = {**cluster.driver_env, "RAY_DEDUP_LOGS": "0"}  # every step line, from both ranks
    proc = subprocess.Popen([sys.executable, "-m", "raypose", "train", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    killed = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            match = STEP_LINE.search(line)
            if kill and not killed.is_set() and match and (int(match[1]), int(match[2])) == KILL_AT:
                pids = cluster.train_worker_pids()
                os.kill(pids[-1], signal.SIGKILL)
                killed.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc.wait(timeout=1200)
    reader.join(timeout=30)
    seconds = time.monotonic() - start
    steps = sum(1 for line in lines if STEP_LINE.search(line)) // 2  # both ranks log each step
    if proc.returncode != 0:
        sys.stderr.write("".join(lines[-80:]))
        raise SystemExit(f"{path.name}: exit {proc.returncode}")
    return {"seconds": seconds, "steps": steps, "killed": killed.is_set()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every-min", type=float, default=0.02, help="checkpoint_every_min of the third run")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-fault-"))
    data_root = folder / "data"
    cluster = start_head(node_env(), cpus=2)
    try:
        add_worker_node(cluster, cpus=2)
        # generate the data once, outside the timings
        run(cluster, config(folder, data_root, "warmup", None), kill=False)
        results = {
            "uninterrupted": run(cluster, config(folder, data_root, "plain", None), kill=False),
            "killed, epoch-end checkpoints": run(cluster, config(folder, data_root, "epoch-end", None), kill=True),
            f"killed, checkpoint_every_min {args.every_min:g}":
                run(cluster, config(folder, data_root, "in-epoch", args.every_min), kill=True),
        }
    finally:
        cluster.stop()
    base = results["uninterrupted"]
    print("| run | wall s | extra wall s | optimizer steps | steps retrained |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.1f} | {r['seconds'] - base['seconds']:+.1f} | {r['steps']} | "
              f"{r['steps'] - base['steps']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
