"""A trial's outcome, as the search reports it and the final stage, the report and the CLI read it.

Pure Python: no Ray, no MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from raypose.errors import RayposeError


@dataclass(frozen=True)
class TrialResult:
    """One trial of a study.

    ``params`` are the trial's searched values under their config keys (``optim.lr``), the same
    names MLflow, Tune's trial names, ``metrics.json`` and ``report.md`` use. ``best_checkpoint``
    is the Train checkpoint folder (a local path or a URI) of the epoch with ``best_oks_map``;
    ``history`` is its learning curve.
    """

    trial_id: str
    kind: Literal["baseline", "search"]
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    best_oks_map: float | None = None
    best_epoch: int | None = None
    best_checkpoint: str | None = None
    error: str | None = None
    history: tuple[tuple[int, float], ...] = ()  # (epoch, oks_map) of every evaluated epoch

    @property
    def scored(self) -> bool:
        return self.best_oks_map is not None and bool(self.best_checkpoint)


def pick_best(trials: list[TrialResult]) -> tuple[TrialResult, TrialResult | None]:
    """The trial with the highest oks_map at any evaluated epoch, and the baseline trial (if any).

    Ties go to the baseline (a search that only matches the default recipe has found nothing),
    then to the lowest trial id: the same trials always give the same best, so a resumed study
    evaluates the checkpoint the first one kept.

    Raises:
        RayposeError: no trial reported an oks_map (all errored before their first evaluation).
    """
    scored = [t for t in trials if t.scored]
    if not scored:
        errors = "; ".join(f"{t.trial_id}: {t.error}" for t in trials if t.error)[:2000]
        raise RayposeError(f"no trial produced an evaluated checkpoint. Trial errors: {errors or 'none'}")
    top = max(t.best_oks_map for t in scored)
    best = min((t for t in scored if t.best_oks_map == top), key=lambda t: (t.kind != "baseline", t.trial_id))
    baseline = next((t for t in trials if t.kind == "baseline"), None)
    return best, baseline


def epochs_saved(trials: list[TrialResult], epochs: int) -> float:
    """The fraction of trial-epochs early stopping saved against running every trial to the end."""
    budget = len(trials) * epochs
    return 1.0 - sum(t.epochs for t in trials) / budget if budget else 0.0
