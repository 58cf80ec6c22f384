"""Where a training run runs: the small interface :func:`raypose.training.run.run_training` needs.

A :class:`Session` gives rank, world size and device, the latest checkpoint to resume from,
and takes each epoch's metrics and checkpoint. :class:`LocalSession` runs in one process
without Ray; ``raypose.training.ray_train.RaySession`` runs on a Ray Train worker.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from raypose.checkpoint import CHECKPOINT_FILE, load_checkpoint
from raypose.errors import InputError
from raypose.io import write_text_atomic
from raypose.storage import folder_bytes, move_folder

log = logging.getLogger(__name__)

CHECKPOINT_DIR = re.compile(r"epoch_\d{4,}")
PARTIAL_DIR = "in_epoch"  # LocalSession's mid-epoch checkpoint


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint a session has put in storage: its folder's name, how long storing it took
    (an asynchronous upload's own time, which training no longer waits for) and its bytes."""

    name: str
    seconds: float
    bytes: int


def _epoch_of(folder: Path) -> int:
    return int(folder.name.split("_")[1])


class Session(Protocol):
    """What a training run needs from where it runs."""

    world_rank: int
    world_size: int
    node_id: str  # the node this worker runs on (Ray's node id; nodes may share an IP address)
    device: torch.device

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The payload of the newest checkpoint of this run, or None for a fresh run."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """Called by every rank once per epoch; rank 0 passes a folder holding the checkpoint.
        The session owns that folder from then on and removes it once stored (an asynchronous
        upload stores it after this returns)."""

    def already_finished(self, last_metrics: dict[str, float]) -> None:
        """The run resumed after its last epoch: ``last_metrics`` are its final epoch's."""

    def save_progress(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """Called by every rank for a checkpoint inside an epoch (``metrics``: ``epoch``, the
        whole epochs done, and ``epoch_step``); it becomes the latest checkpoint."""

    def preemption_pending(self) -> bool:
        """Whether a node of the run is announced as being preempted (every rank, same step)."""

    stored: list[StoredCheckpoint]  # this rank's checkpoints in storage so far, in the order stored


@dataclass
class LocalSession:
    """One process, no Ray: checkpoints in ``run_dir/checkpoints/epoch_NNNN/``, metrics in
    ``run_dir/metrics.jsonl``. Keeps the newest checkpoint and the best by ``oks_map``."""

    run_dir: Path
    keep: int = 2
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    world_rank: int = 0
    world_size: int = 1
    node_id: str = "local"
    stored: list[StoredCheckpoint] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self._clean_interrupted_saves()

    def _clean_interrupted_saves(self) -> None:
        """A save interrupted mid-copy leaves ``epoch_NNNN.tmp/``: it never counts as a checkpoint
        and is removed. Metrics lines of epochs past the newest checkpoint are dropped too (they
        are trained, and written, again), and so is a last line cut short; the newest
        checkpoint's own line, when missing, is restored from its history.

        Raises:
            InputError: a line of ``metrics.jsonl`` before its last is not JSON (:func:`read_metrics_lines`).
        """
        for stale in [*(self.run_dir / "checkpoints").glob("epoch_*.tmp"), self._partial.with_name(PARTIAL_DIR + ".tmp")]:
            shutil.rmtree(stale, ignore_errors=True)
        metrics_file = self.run_dir / "metrics.jsonl"
        if not metrics_file.is_file():
            return
        dirs = self._checkpoint_dirs()
        done = _epoch_of(dirs[-1]) if dirs else 0
        lines = metrics_file.read_text().splitlines()
        kept = {m["epoch"]: line for line, m in read_metrics_lines(metrics_file, lines) if m["epoch"] <= done}
        if dirs and done not in kept:  # stored, then killed while its line was appended: the checkpoint has it
            history = load_checkpoint(dirs[-1] / CHECKPOINT_FILE).get("history", [])
            kept.update({m["epoch"]: json.dumps(m) for m in history if m.get("epoch") not in kept})
            log.info("%s: epoch %d's line restored from its checkpoint", metrics_file, done)
        text = "".join(line + "\n" for _, line in sorted(kept.items()))
        if text != "".join(line + "\n" for line in lines):
            write_text_atomic(metrics_file, text)

    def _checkpoint_dirs(self) -> list[Path]:
        found = [p for p in (self.run_dir / "checkpoints").glob("epoch_*")
                 if CHECKPOINT_DIR.fullmatch(p.name) and (p / CHECKPOINT_FILE).is_file()]
        return sorted(found, key=_epoch_of)

    @property
    def _partial(self) -> Path:
        """The mid-epoch checkpoint (one at a time; removed when the next epoch's lands)."""
        return self.run_dir / "checkpoints" / PARTIAL_DIR

    def latest_checkpoint(self) -> dict[str, Any] | None:
        dirs = self._checkpoint_dirs()
        latest = load_checkpoint(dirs[-1] / CHECKPOINT_FILE) if dirs else None
        if (self._partial / CHECKPOINT_FILE).is_file():
            partial = load_checkpoint(self._partial / CHECKPOINT_FILE)
            if latest is None or partial["epoch"] >= latest["epoch"]:  # inside the epoch after it
                return partial
        return latest

    def save_progress(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """Store the mid-epoch checkpoint in place of the previous one (moved to a temporary name, then renamed)."""
        if checkpoint_dir is not None:
            self._store(checkpoint_dir, self._partial)

    def preemption_pending(self) -> bool:
        """A local process is never preempted by Ray (Ctrl-C and signals are handled elsewhere)."""
        return False

    def _store(self, source: Path, dest: Path) -> None:
        """Move ``source`` (the session's from now on) to ``dest`` through ``dest.tmp``."""
        start, size = time.perf_counter(), folder_bytes(str(source))
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        move_folder(source, tmp)  # a rename on the same disk, a copy and delete across disks (OutputError if full)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        self.stored.append(StoredCheckpoint(dest.name, time.perf_counter() - start, size))

    def already_finished(self, last_metrics: dict[str, float]) -> None:
        """Nothing to do: ``metrics.jsonl`` already holds the last epoch."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """Store the checkpoint (moved to ``epoch_NNNN.tmp``, then renamed), then the metrics line:
        an interruption at any point leaves either both or neither."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint_dir is not None:
            self._store(checkpoint_dir, self.run_dir / "checkpoints" / f"epoch_{int(metrics['epoch']):04d}")
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if checkpoint_dir is not None:
            shutil.rmtree(self._partial, ignore_errors=True)  # the whole epoch supersedes it
            self._prune()

    def _prune(self) -> None:
        dirs = self._checkpoint_dirs()
        scores = {}
        metrics_file = self.run_dir / "metrics.jsonl"
        for _, m in read_metrics_lines(metrics_file, metrics_file.read_text().splitlines()):
            scores[int(m["epoch"])] = m.get("oks_map", float("-inf"))  # not evaluated: kept only while newest
        ranked = sorted(dirs[:-1], key=lambda p: scores.get(_epoch_of(p), float("-inf")), reverse=True)
        for stale in ranked[max(self.keep - 1, 0) :]:
            shutil.rmtree(stale)


def read_metrics_lines(path: Path, lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(line, metrics)`` for each line of ``path`` (``metrics.jsonl``; ``lines``: its lines), blank ones skipped.

    A last line that is not JSON is an append that a crash or a full disk cut short: it is
    dropped with a warning (:class:`LocalSession` then restores it from the epoch's checkpoint).

    Raises:
        InputError: a line before the last is not JSON, or a line is not an object with an
            ``epoch``; the message names the file and the line.
    """
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    parsed = []
    for number, line in numbered:
        try:
            metrics = json.loads(line)
        except json.JSONDecodeError as e:
            if number == numbered[-1][0]:
                log.warning("%s: line %d is cut short (%s), as a crash or a full disk leaves an append: dropped",
                            path, number, e.msg)
                break
            raise InputError(f"{path}: line {number} is not valid JSON ({e.msg}); it is the run's per-epoch log: "
                             f"repair or delete that line, or start a new run with another name") from None
        if not isinstance(metrics, dict) or "epoch" not in metrics:
            raise InputError(f"{path}: line {number} is not a metrics object with an 'epoch'; repair or delete "
                             "that line, or start a new run with another name")
        parsed.append((line, metrics))
    return parsed
