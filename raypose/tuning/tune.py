"""The one module that talks to Ray Tune: Optuna (TPE) + ASHA over Ray Train trials.

Each Tune trial runs :func:`train_driver`, a function trainable that builds a ``TorchTrainer``
for its sampled config and reports through ``TuneReportCallback`` (the Ray 2.60 pattern; the
deprecated ``Tuner(trainer)`` is not used). The trial's driver holds a fraction of a CPU; its
Train workers hold the real resources (a GPU each where there are GPUs), and
``max_concurrent`` bounds the Train runs in flight so they pack onto the cluster.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from raypose.errors import ConfigError
from raypose.io import load_json, write_json_atomic
from raypose.tracking import MlflowRun, child_runs, find_or_create_child_run
from raypose.training.ray_train import build_trainer
from raypose.tuning.space import TRIAL_KIND_KEY, SearchSpace, SpaceSampler

log = logging.getLogger(__name__)

METRIC, MODE = "oks_map", "max"
STATUS_TAG = "raypose.trial_status"


@dataclass
class StudyPaths:
    """Where a study keeps its state: ``<storage>/<name>/`` for Tune, ``<name>_train/`` for Train."""

    storage: str
    name: str

    @property
    def tune_dir(self) -> str:
        return f"{self.storage}/{self.name}"

    @property
    def train_storage(self) -> str:
        return f"{self.storage}/{self.name}_train"

    @property
    def local_dir(self) -> Path:
        """A local folder for study files (the parent run id, ``best/``)."""
        if "://" in self.storage:
            return Path("runs") / self.name
        return Path(self.storage) / self.name


def study_paths(space: SearchSpace) -> StudyPaths:
    storage = space.tune.storage_path
    if "://" not in storage:
        storage = os.path.abspath(storage)
    return StudyPaths(storage=storage, name=space.name)


def check_shared_storage(space: SearchSpace) -> None:
    """Multi-node runs need storage every node sees (s3://, gs:// or an NFS mount).

    Raises:
        ConfigError: shared storage is required (by default: the cluster has several nodes) and
            ``tune.storage_path`` is a local path. An NFS mount on every node is declared with
            ``tune.require_shared_storage: false``.
    """
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    required = space.tune.require_shared_storage
    if required is None:
        required = nodes > 1
    if required and "://" not in space.tune.storage_path:
        raise ConfigError(
            f"{space.source}: the Ray cluster has {nodes} node(s) and tune.storage_path "
            f"{space.tune.storage_path!r} is a local path: checkpoints written on one node are not seen by "
            "the others. Set tune.storage_path to s3://bucket/path (or gs://), or mount the same NFS path on "
            "every node and set tune.require_shared_storage: false"
        )


def train_driver(config: dict[str, Any], space: SearchSpace, parent_run_id: str | None) -> None:
    """A Tune trial: one Ray Train run of the base config with this trial's sampled values."""
    context = tune.get_context()
    trial_id = context.get_trial_id()
    kind = config.get(TRIAL_KIND_KEY, "search")
    cfg = space.trial_config(config, name=f"{space.name}-{trial_id}")
    paths = study_paths(space)
    updates: dict[str, Any] = {"storage_path": paths.train_storage}
    if cfg.mlflow.enabled and parent_run_id:
        run_name = f"{'baseline' if kind == 'baseline' else 'trial'}-{trial_id}"
        run_id = find_or_create_child_run(
            cfg.mlflow.experiment, parent_run_id, trial_id, run_name, uri=cfg.mlflow.tracking_uri,
            tags={"raypose.trial_kind": kind, "raypose.study": space.name},
        )
        updates["mlflow"] = cfg.mlflow.model_copy(update={"run_id": run_id, "parent_run_id": parent_run_id})
    cfg = cfg.model_copy(update=updates)
    trainer = build_trainer(cfg, callbacks=[TuneReportCallback()], max_failures=space.tune.max_failures)
    result = trainer.fit()
    if result.error is not None:
        raise result.error


class TrialStatusTagger(Callback):
    """Tags each trial's MLflow run with how it ended: completed, stopped_early or errored."""

    def __init__(self, experiment: str, parent_run_id: str, epochs: int, uri: str | None):
        self.experiment, self.parent_run_id, self.epochs, self.uri = experiment, parent_run_id, epochs, uri

    def _tag(self, trial, status: str) -> None:
        try:
            run_id = find_or_create_child_run(self.experiment, self.parent_run_id, trial.trial_id,
                                              f"trial-{trial.trial_id}", uri=self.uri)
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.uri) if self.uri else MlflowClient()
            client.set_tag(run_id, STATUS_TAG, status)
            if status != "completed":
                client.set_terminated(run_id, status="KILLED" if status == "stopped_early" else "FAILED")
        except Exception:  # tagging must never break the search
            log.exception("could not tag the MLflow run of trial %s", trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        epoch = (trial.last_result or {}).get("epoch", 0)
        self._tag(trial, "completed" if epoch >= self.epochs else "stopped_early")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._tag(trial, "errored")


def _search_alg(space: SearchSpace) -> ConcurrencyLimiter:
    sampler = optuna.samplers.TPESampler(seed=space.tune.seed)
    search = OptunaSearch(space=SpaceSampler(space), metric=METRIC, mode=MODE, sampler=sampler)
    return ConcurrencyLimiter(search, max_concurrent=space.tune.max_concurrent)


def _scheduler(space: SearchSpace, epochs: int):
    asha = space.tune.asha
    if not asha.enabled:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch", metric=METRIC, mode=MODE, max_t=epochs,
        grace_period=min(asha.grace_period, epochs), reduction_factor=asha.reduction_factor,
    )


def _parent_run(space: SearchSpace, paths: StudyPaths, resume: bool) -> MlflowRun | None:
    base = space.base_config()
    if not base.mlflow.enabled:
        return None
    state_file = paths.local_dir / "mlflow_parent.json"
    run_id = load_json(state_file)["run_id"] if resume and state_file.is_file() else None
    run = MlflowRun(base.mlflow.experiment, uri=base.mlflow.tracking_uri, run_id=run_id,
                    run_name=f"study-{space.name}", tags={"raypose.study": space.name})
    if run_id is None:
        write_json_atomic(state_file, {"run_id": run.run_id})
        run.log_params({
            "study": space.name, "num_samples": space.tune.num_samples, "max_concurrent": space.tune.max_concurrent,
            "epochs": base.epochs, "workers_per_trial": base.workers, "asha": space.tune.asha.enabled,
            "baseline": space.tune.baseline,
            **{
                f"search.{k}": [d.model_dump(exclude_none=True, by_alias=True, exclude_defaults=True) for d in v]
                for k, v in space.search.items()
            },
        })
        run.log_artifact(space.source)
    return run


def run_search(space: SearchSpace, resume: bool = False) -> tuple[tune.ResultGrid, MlflowRun | None, StudyPaths]:
    """Run (or resume) the search; returns Tune's results, the MLflow parent run and the paths."""
    check_shared_storage(space)
    paths = study_paths(space)
    base = space.base_config()
    parent = _parent_run(space, paths, resume)
    trainable = tune.with_resources(
        tune.with_parameters(train_driver, space=space, parent_run_id=parent.run_id if parent else None),
        {"CPU": space.tune.trial_cpus},
    )
    callbacks = [TrialStatusTagger(base.mlflow.experiment, parent.run_id, base.epochs, base.mlflow.tracking_uri)] if parent else []
    if resume and tune.Tuner.can_restore(paths.tune_dir):
        log.info("resuming the search in %s", paths.tune_dir)
        tuner = tune.Tuner.restore(paths.tune_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if resume:
            log.warning("nothing to resume in %s: starting a new search", paths.tune_dir)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_search_alg(space),
                scheduler=_scheduler(space, base.epochs),
                num_samples=space.tune.num_samples,
            ),
            run_config=tune.RunConfig(
                name=paths.name,
                storage_path=paths.storage,
                failure_config=tune.FailureConfig(max_failures=space.tune.max_failures),
                callbacks=callbacks,
            ),
        )
    return tuner.fit(), parent, paths


def trial_table(results: tune.ResultGrid) -> list[dict[str, Any]]:
    """One row per trial: id, kind, sampled config, epochs run, best oks_map and its checkpoint."""
    rows = []
    for result in results:
        df = result.metrics_dataframe
        row: dict[str, Any] = {
            "trial_id": (result.metrics or {}).get("trial_id") or Path(result.path).name,
            "kind": result.config.get(TRIAL_KIND_KEY, "search"),
            "config": {k: v for k, v in result.config.items() if k != TRIAL_KIND_KEY},
            "error": str(result.error) if result.error else None,
            "epochs": 0,
            "best_oks_map": None,
            "best_checkpoint": None,
        }
        if df is not None and METRIC in df:
            scored = df.dropna(subset=[METRIC])
            if len(scored):
                best = scored.loc[scored[METRIC].idxmax()]
                row.update(epochs=int(df["epoch"].max()), best_oks_map=float(best[METRIC]),
                           best_epoch=int(best["epoch"]), best_checkpoint=best.get("checkpoint_path"))
        rows.append(row)
    return rows


def count_children(space: SearchSpace, parent_run_id: str) -> int:
    base = space.base_config()
    return len(child_runs(base.mlflow.experiment, parent_run_id, base.mlflow.tracking_uri))
