"""The one module that talks to Ray Tune: Optuna (TPE) + ASHA over Ray Train trials.

Each Tune trial runs :func:`train_driver`, a function trainable that builds a ``TorchTrainer``
for its config and reports through ``TuneReportCallback`` (the Ray 2.60 pattern; the
deprecated ``Tuner(trainer)`` is not used). The trial's driver holds a fraction of a CPU; its
Train workers hold the real resources (a GPU each where there are GPUs), and
``max_concurrent`` bounds the Train runs in flight so they pack onto the cluster.

:func:`run_search` returns one :class:`~raypose.tuning.trials.TrialResult` per trial; the
study (:mod:`raypose.tuning.study`) owns the MLflow parent run and the final stage.
"""

from __future__ import annotations

import json
import logging
import os
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

from raypose.errors import ConfigError, Interrupted
from raypose.experiment_log import end_trial_run, find_or_create_child_run
from raypose.storage import delete_folder, is_uri, join, list_folders
from raypose.training.ray_train import build_trainer, checkpoint_dir_name, connected_to_cluster, run_trial
from raypose.training.run import OKS_CURVE
from raypose.tuning.space import (
    OPTUNA_ALTERNATIVE_SEP,
    TRIAL_KIND_KEY,
    SearchSpace,
    SpaceSampler,
    trial_params,
)
from raypose.tuning.trials import TrialResult

log = logging.getLogger(__name__)

METRIC, MODE = "oks_map", "max"
FAILURE_KEY = "failure"  # in a trial's last result when it failed deterministically
FAILED_TRIAL_SCORE = 0.0  # what the search learns from such a trial


def shared_storage_required(setting: bool | None, connected: bool, nodes: int) -> bool:
    """Whether files must go where every node sees them: as ``tune.require_shared_storage``
    says, else yes on a cluster raypose connected to (``$RAY_ADDRESS``, every Ray job: it may
    have or get other nodes, e.g. autoscaled GPU workers) or one with several nodes now."""
    if setting is not None:
        return setting
    return connected or nodes > 1


def check_shared_storage(space: SearchSpace) -> None:
    """Cluster runs need storage and an MLflow store that every node sees, checked before any
    trial starts.

    Raises:
        ConfigError: shared storage is required (:func:`shared_storage_required`) and
            ``tune.storage_path`` is a local path (an NFS mount on every node is declared with
            ``tune.require_shared_storage: false``); or the MLflow tracking URI is a sqlite or
            file store on a cluster, whatever that setting says (sqlite over NFS loses writes).
    """
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    connected = connected_to_cluster()
    cluster = f"the Ray cluster at $RAY_ADDRESS ({nodes} node(s) now)" if connected else f"the Ray cluster ({nodes} nodes)"
    if shared_storage_required(space.tune.require_shared_storage, connected, nodes) and not is_uri(space.tune.storage_path):
        raise ConfigError(
            f"{space.source}: on {cluster}, tune.storage_path "
            f"{space.tune.storage_path!r} is a local path: checkpoints written on one node are not seen by "
            "the others. Set tune.storage_path to s3://bucket/path (or gs://; set AWS_ENDPOINT_URL on every node "
            "for MinIO and other S3-compatible stores), or mount the same NFS path on every node and set "
            "tune.require_shared_storage: false"
        )
    uri = space.base.mlflow.tracking_uri or ""
    if space.base.mlflow.enabled and (connected or nodes > 1) and is_local_tracking_uri(uri):
        raise ConfigError(
            f"{space.source}: on {cluster}, the MLflow tracking URI {uri!r} is a file on one machine: trials "
            "on other nodes would log into their own copy. Start a tracking server (`mlflow server --host 0.0.0.0 "
            "--port 5000 --backend-store-uri sqlite:///mlflow.db --artifacts-destination s3://bucket/mlflow`, as "
            "cluster/ray-cluster.yaml does on the head node) and set MLFLOW_TRACKING_URI=http://HEAD:5000 on the "
            "nodes or mlflow.tracking_uri in the config"
        )


def is_local_tracking_uri(uri: str) -> bool:
    """Whether an MLflow tracking URI (as ``resolve_tracking_uri`` gives it: a bare folder is
    already a ``file:`` URI) is a store on one machine's disk."""
    return uri.startswith(("sqlite:", "file:"))


def train_driver(config: dict[str, Any], space: SearchSpace, parent_run_id: str | None) -> None:
    """A Tune trial: one Ray Train run of the base config with this trial's values."""
    trial_id = tune.get_context().get_trial_id()
    kind = config.get(TRIAL_KIND_KEY, "search")
    cfg = space.trial_config(config, name=train_run_name(space, trial_id))
    updates: dict[str, Any] = {"storage_path": space.train_storage}
    if space.tune.keep_checkpoints == "best":
        updates["keep_checkpoints"] = 1  # the best evaluated one, and (Train always does) the latest
    if cfg.mlflow.enabled and parent_run_id:
        run_id = find_or_create_child_run(
            cfg.mlflow.experiment, parent_run_id, trial_id, f"{kind if kind == 'baseline' else 'trial'}-{trial_id}",
            uri=cfg.mlflow.tracking_uri, tags={"raypose.trial_kind": kind, "raypose.study": space.name},
        )
        updates["mlflow"] = cfg.mlflow.model_copy(update={"run_id": run_id, "parent_run_id": parent_run_id,
                                                          "params": trial_param_keys(space)})
    # A lost worker or node is restored inside the trial by Train (base max_failures), from the
    # trial's last checkpoint and on its own placement group; Tune's retries (tune.max_failures)
    # are for a trial whose driver itself was lost.
    trainer = build_trainer(cfg.model_copy(update=updates), callbacks=[TuneReportCallback()])
    failure, message = run_trial(trainer)
    if failure is not None:
        # Out of memory or a non-finite loss happens again on every retry: the search gets a poor
        # result to learn from (Optuna ignores failed trials), the reason is recorded, and it goes on.
        log.warning("trial %s failed (%s), reported to the search as oks_map %.1f: %s",
                    trial_id, failure, FAILED_TRIAL_SCORE, message)
        tune.report({METRIC: FAILED_TRIAL_SCORE, "epoch": 0, FAILURE_KEY: f"{failure}: {message}"[:500]})


def trial_param_keys(space: SearchSpace) -> list[str]:
    """A trial run's MLflow params: the searched keys, nothing else. MLflow 3.17's Compare view
    opens its scatter plot on the first param by name and its parallel coordinates on the first
    three that differ (benchmarks/check_mlflow_ui.py): any other param, such as ``epochs``, would
    take a searched setting's place. What else a reader needs is in tags (``raypose.epochs``, ...)
    and the whole config in ``config.yaml``."""
    return list(space.search)


class TrialRunCloser(Callback):
    """Ends each trial's MLflow run as the trial ends: completed, stopped_early or errored."""

    def __init__(self, space: SearchSpace, parent_run_id: str):
        self.experiment = space.base.mlflow.experiment
        self.uri = space.base.mlflow.tracking_uri
        self.epochs = space.base.epochs
        self.parent_run_id = parent_run_id

    def _end(self, trial, status: str, reason: str | None = None) -> None:
        try:
            end_trial_run(self.experiment, self.parent_run_id, trial.trial_id, status, self.uri, reason)
        except Exception:  # MLflow bookkeeping must never break the search
            log.exception("could not end the MLflow run of trial %s", trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        if last.get(FAILURE_KEY):
            self._end(trial, "errored", last[FAILURE_KEY])
        else:
            self._end(trial, "completed" if last.get("epoch", 0) >= self.epochs else "stopped_early")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "errored", str(getattr(trial, "error_msg", "") or "") or None)


class CheckpointPruner(Callback):
    """``tune.keep_checkpoints: best``: delete, as trials end, the checkpoints that can no longer
    serve the final stage.

    While a trial runs, Train keeps its best evaluated checkpoint and its latest (resume). When
    it ends (completed, stopped early, or failed for good) only its best can still serve, and
    only while no ended trial beats it (in :func:`~raypose.tuning.trials.pick_best`'s order):
    the leader keeps its best checkpoint, a trial it beats keeps none. The baseline always keeps
    its best (the final stage evaluates it too). A trial that errored keeps everything, for
    ``--resume``; a trial whose curve this callback never saw (ended right after a resume) is
    left alone, and the study's end (:func:`raypose.tuning.study._retain_checkpoints`) removes
    whatever is left over.
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        self.curves: dict[str, list[tuple[int, float]]] = {}  # the last curve each trial reported
        self.leader: tuple[float, bool, str] | None = None  # (score, is baseline, trial id) of the best ended trial

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        text = result.get(OKS_CURVE)
        if isinstance(text, str) and text:
            self.curves[trial.trial_id] = [(int(e), float(v)) for e, v in json.loads(text)]

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.on_trial_result(iteration, trials, trial, trial.last_result or {})
        curve = self.curves.get(trial.trial_id)
        if not curve:
            return
        best_epoch, score = max(curve, key=lambda p: (p[1], p[0]))  # ties: the later epoch, as the search
        baseline = (trial.config or {}).get(TRIAL_KIND_KEY) == "baseline"
        entry = (score, baseline, trial.trial_id)
        keep = {checkpoint_dir_name(best_epoch)}
        beaten = None
        if self.leader is None or ranks_above(entry, self.leader):
            beaten, self.leader = self.leader, entry
        elif not baseline:
            keep = set()
        self._prune(trial.trial_id, keep)
        if beaten is not None and not beaten[1]:
            self._prune(beaten[2], set())

    def _prune(self, trial_id: str, keep: set[str]) -> None:
        try:
            freed = keep_only_checkpoints(join(self.space.train_storage, train_run_name(self.space, trial_id)), keep)
        except Exception:  # bookkeeping must never break the search
            log.exception("could not prune the checkpoints of trial %s", trial_id)
            return
        if freed:
            log.info("trial %s: kept checkpoint %s, deleted %d other(s)", trial_id, sorted(keep) or "none", freed)


def ranks_above(a: tuple[float, bool, str], b: tuple[float, bool, str]) -> bool:
    """Whether trial ``a`` = (score, is baseline, trial id) ranks above ``b`` as pick_best ranks
    them: the higher score, then the baseline, then the lower trial id."""
    return (a[0], a[1], _reversed_id(a[2])) > (b[0], b[1], _reversed_id(b[2]))


def _reversed_id(trial_id: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in trial_id) + (0,)


def keep_only_checkpoints(run_folder: str, keep: set[str]) -> int:
    """Delete the checkpoint folders (``epoch_*``) of a Train run that are not in ``keep``; returns how many."""
    stale = [name for name in list_folders(run_folder) if name.startswith("epoch_") and name not in keep]
    for name in stale:
        delete_folder(join(run_folder, name))
    return len(stale)


OPTUNA_STUDY_FILE = "optuna.db"  # the Optuna study, beside Tune's state: optuna-dashboard sqlite:///optuna.db
OPTUNA_STUDY_NAME = "optuna"  # Ray's OptunaSearch's default study name


class ConfigKeyOptunaSearch(OptunaSearch):
    """``OptunaSearch`` whose Tune configs carry config keys only, and whose study is kept as a
    file (``export_to``, a local path or a URI) that Optuna's own tools open.

    Ray records every ``suggest_*`` call of the define-by-run sampler under Optuna's parameter
    name, which is ``optim.lr|1`` for a dimension with alternatives. :class:`SpaceSampler`
    returns each value under its config key too, so the Optuna names are dropped here: Tune's
    config, its trial names and everything read from them say ``optim.lr``. (The Optuna study
    keeps Optuna's names: each alternative is its own parameter there.)

    The study itself stays in memory, pickled with Tune's state as Ray does (so ``--resume``
    works as before); each time Tune saves the searcher it is also copied to ``export_to`` as an
    sqlite file.
    """

    def __init__(self, *args, export_to: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.export_to = export_to

    def save(self, checkpoint_path: str) -> None:
        super().save(checkpoint_path)
        if self.export_to and self._ot_study is not None:
            try:
                export_study(self._ot_study, self.export_to)
            except Exception:  # bookkeeping must never break the search
                log.exception("could not copy the Optuna study to %s", self.export_to)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if not isinstance(config, dict):
            return config
        return {k: v for k, v in config.items() if OPTUNA_ALTERNATIVE_SEP not in k}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:  # epochs that were not evaluated carry no score
            super().on_trial_result(trial_id, result)


def export_study(study: optuna.Study, location: str) -> str:
    """Copy ``study`` into a new sqlite file at ``location`` (a local path or a URI), replacing
    the previous copy whole (temporary name and rename; one put on S3)."""
    import tempfile

    from raypose.storage import upload_folder

    optuna_log = logging.getLogger("optuna")
    level = optuna_log.level
    optuna_log.setLevel(logging.WARNING)  # not "A new study created in RDB" at every save
    try:
        with tempfile.TemporaryDirectory(prefix="raypose-optuna-") as tmp:
            name = location.rstrip("/").rsplit("/", 1)[-1]
            optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage,
                              to_storage=f"sqlite:///{Path(tmp) / name}", to_study_name=study.study_name)
            upload_folder(Path(tmp), location.rstrip("/").rsplit("/", 1)[0])
    finally:
        optuna_log.setLevel(level)
    return location


def load_exported_study(location: str, folder: Path) -> optuna.Study | None:
    """The study :func:`export_study` wrote at ``location`` (copied into the local ``folder``),
    or None when there is none."""
    from raypose.storage import fetch_file

    local = folder / OPTUNA_STUDY_FILE
    try:
        fetch_file(location, local)
    except (FileNotFoundError, OSError):
        return None
    storage = optuna.storages.RDBStorage(f"sqlite:///{local}")
    return optuna.load_study(study_name=OPTUNA_STUDY_NAME, storage=storage)


def _search_alg(space: SearchSpace) -> ConcurrencyLimiter:
    sampler = optuna.samplers.TPESampler(seed=space.tune.seed)
    search = ConfigKeyOptunaSearch(space=SpaceSampler(space), metric=METRIC, mode=MODE, sampler=sampler,
                                   study_name=OPTUNA_STUDY_NAME, export_to=join(space.study_dir, OPTUNA_STUDY_FILE))
    return ConcurrencyLimiter(search, max_concurrent=space.tune.max_concurrent)


class BaselineKeepingASHA(ASHAScheduler):
    """ASHA that never stops the baseline trial early.

    The baseline's results still enter ASHA's rungs (they set the bar for the other trials),
    but it always runs its full budget, so the study's gain over the default recipe compares
    full runs.
    """

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        full_budget = result.get(self._time_attr, 0) >= self._max_t
        if action == self.STOP and not full_budget and (trial.config or {}).get(TRIAL_KIND_KEY) == "baseline":
            self._num_stopped -= 1
            return self.CONTINUE
        return action


def _scheduler(space: SearchSpace):
    asha, epochs = space.tune.asha, space.base.epochs
    if not asha.enabled:
        return FIFOScheduler()
    return BaselineKeepingASHA(
        time_attr="epoch", metric=METRIC, mode=MODE, max_t=epochs,
        grace_period=min(asha.grace_period, epochs), reduction_factor=asha.reduction_factor,
    )


def run_search(space: SearchSpace, parent_run_id: str | None, resume: bool = False) -> list[TrialResult]:
    """Run (or resume) the search on the connected Ray cluster; one result per trial."""
    # Epochs that are not evaluated report no oks_map (ASHA and the searcher skip them); Tune's
    # strict check would otherwise reject those results.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    trainable = tune.with_resources(
        tune.with_parameters(train_driver, space=space, parent_run_id=parent_run_id),
        {"CPU": space.tune.trial_cpus, **space.tune.trial_resources},
    )
    if resume and tune.Tuner.can_restore(space.tune_dir):
        log.info("resuming the search in %s", space.tune_dir)
        tuner = tune.Tuner.restore(space.tune_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if resume:
            log.warning("nothing to resume in %s: starting a new search", space.tune_dir)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=_search_alg(space), scheduler=_scheduler(space), num_samples=space.tune.num_samples,
            ),
            run_config=tune.RunConfig(
                name=space.name,
                storage_path=space.tune.storage_path,
                failure_config=tune.FailureConfig(max_failures=space.tune.max_failures),
                callbacks=[*([TrialRunCloser(space, parent_run_id)] if parent_run_id else []),
                           *([CheckpointPruner(space)] if space.tune.keep_checkpoints == "best" else [])],
            ),
        )
    results = tuner.fit()
    trials = [_trial_result(result, space) for result in results]
    # trials that ended (completed, stopped early, failed): the rest were interrupted or never started
    unfinished = space.tune.num_samples - results.num_terminated - results.num_errors
    if unfinished:
        # Tune stops on Ctrl-C (SIGINT) and returns what it has: the study must not go on.
        raise Interrupted(
            f"the search stopped with {unfinished} of {space.tune.num_samples} trials unfinished; its state is "
            f"saved in {space.tune_dir}. Resume it with: raypose tune {space.source} --resume"
        )
    return trials



def train_run_name(space: SearchSpace, trial_id: str) -> str:
    """A trial's Ray Train run: its folder under ``space.train_storage`` and its MLflow name."""
    return f"{space.name}-{trial_id}"


def _trial_result(result: tune.Result, space: SearchSpace) -> TrialResult:
    """A Tune result as a :class:`TrialResult`: the best evaluated epoch and its checkpoint.

    A trial resumed after an interruption has, in Tune, only the results since (and none with a
    checkpoint when it had already trained its last epoch). Its curve comes from the last report's
    :data:`OKS_CURVE` (every evaluated epoch, restored ones too), and its best checkpoint is that
    epoch's folder in the trial's Train run, where Train keeps the best checkpoints.
    """
    config = result.config or {}
    trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
    fields: dict[str, Any] = {}
    df = result.metrics_dataframe
    if df is not None and METRIC in df:
        scored = df.dropna(subset=[METRIC])
        if len(scored):
            best = scored.loc[scored[METRIC].idxmax()]
            fields = dict(epochs=int(df["epoch"].max()), best_oks_map=float(best[METRIC]), best_epoch=int(best["epoch"]),
                          best_checkpoint=checkpoint_uri(best.get("checkpoint_path"), space.train_storage))
            curve = _reported_curve(df)
            if curve:
                # ties go to the later epoch: more trained, and the checkpoint Train keeps
                best_epoch, best_score = max(curve, key=lambda point: (point[1], point[0]))
                run_folder = join(space.train_storage, train_run_name(space, trial_id))
                fields.update(history=tuple(curve), best_epoch=best_epoch, best_oks_map=best_score,
                              epochs=max(fields["epochs"], max(e for e, _ in curve)),
                              best_checkpoint=join(run_folder, checkpoint_dir_name(best_epoch)))
    return TrialResult(
        trial_id=trial_id,
        kind=config.get(TRIAL_KIND_KEY, "search"),
        params=trial_params(config),
        error=str(result.error) if result.error else (result.metrics or {}).get(FAILURE_KEY),
        **fields,
    )


def _reported_curve(df) -> list[tuple[int, float]]:
    """The last reported :data:`OKS_CURVE` of a trial's results (a failure report has none)."""
    texts = [t for t in df.get(OKS_CURVE, []) if isinstance(t, str) and t]
    return [(int(e), float(v)) for e, v in json.loads(texts[-1])] if texts else []


def checkpoint_uri(path: Any, storage: str) -> str | None:
    """A reported checkpoint path as a URI Ray and pyarrow open anywhere.

    ``TuneReportCallback`` reports ``Checkpoint.path``, which for ``s3://`` storage is the path
    inside the bucket without its scheme; the scheme is taken from the storage it was written to.
    """
    if not isinstance(path, str) or not path:
        return None
    if is_uri(storage) and "://" not in path:
        return f"{storage.split('://', 1)[0]}://{path}"
    return path
