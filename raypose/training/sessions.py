"""Where a training run runs: the small interface :func:`raypose.training.run.run_training` needs.

A :class:`Session` gives rank, world size and device, the latest checkpoint to resume from,
and takes each epoch's metrics and checkpoint. :class:`LocalSession` runs in one process
without Ray; ``raypose.training.ray_train.RaySession`` runs on a Ray Train worker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from raypose.checkpoint import CHECKPOINT_FILE, load_checkpoint


class Session(Protocol):
    """What a training run needs from where it runs."""

    world_rank: int
    world_size: int
    device: torch.device

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The payload of the newest checkpoint of this run, or None for a fresh run."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """Called by every rank once per epoch; rank 0 passes a folder holding the checkpoint."""

    def already_finished(self, last_metrics: dict[str, float]) -> None:
        """The run resumed after its last epoch: ``last_metrics`` are its final epoch's."""


@dataclass
class LocalSession:
    """One process, no Ray: checkpoints in ``run_dir/checkpoints/epoch_NNNN/``, metrics in
    ``run_dir/metrics.jsonl``. Keeps the newest checkpoint and the best by ``oks_map``."""

    run_dir: Path
    keep: int = 2
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    world_rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)

    def _checkpoint_dirs(self) -> list[Path]:
        found = [p for p in (self.run_dir / "checkpoints").glob("epoch_*") if (p / CHECKPOINT_FILE).is_file()]
        return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.name) or 0))

    def latest_checkpoint(self) -> dict[str, Any] | None:
        dirs = self._checkpoint_dirs()
        return load_checkpoint(dirs[-1] / CHECKPOINT_FILE) if dirs else None

    def already_finished(self, last_metrics: dict[str, float]) -> None:
        """Nothing to do: ``metrics.jsonl`` already holds the last epoch."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if checkpoint_dir is None:
            return
        dest = self.run_dir / "checkpoints" / f"epoch_{int(metrics['epoch']):04d}"
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(checkpoint_dir, dest.with_name(dest.name + ".tmp"), dirs_exist_ok=True)
        os.replace(dest.with_name(dest.name + ".tmp"), dest)
        self._prune()

    def _prune(self) -> None:
        dirs = self._checkpoint_dirs()
        scores = {}
        for line in (self.run_dir / "metrics.jsonl").read_text().splitlines():
            m = json.loads(line)
            scores[int(m["epoch"])] = m.get("oks_map", float("-inf"))  # not evaluated: kept only while newest
        ranked = sorted(dirs[:-1], key=lambda p: scores.get(int(p.name.split("_")[1]), float("-inf")), reverse=True)
        for stale in ranked[max(self.keep - 1, 0) :]:
            shutil.rmtree(stale)
