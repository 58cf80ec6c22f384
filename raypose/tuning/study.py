"""A study: the search a space file describes, from start to report.

:func:`run_study` owns everything a study opens: the MLflow parent run (ended FINISHED, FAILED
or KILLED whatever happens), Ray, the Tune search (:mod:`raypose.tuning.search`), the trial
table and the final stage (:mod:`raypose.tuning.final`). The CLI parses and prints.

A searched value travels: space YAML -> :class:`~raypose.tuning.space.SpaceSampler` (Optuna)
-> Tune's trial config -> :meth:`SearchSpace.trial_config` (a validated ``TrainConfig``) ->
the optimizer (``raypose.training.optim``) and MLflow params (``raypose.training.run``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypose.checkpoint import CHECKPOINT_FILE
from raypose.data.annotations import check_training_annotations
from raypose.data.prepare import ensure_data
from raypose.storage import folder_bytes, join, read_text, upload_folder, write_text
from raypose.training.ray_train import final_stage_wants_gpu, fit_to_cluster, init_ray, run_with_a_gpu
from raypose.tuning.final import final_stage
from raypose.tuning.search import OPTUNA_STUDY_FILE, check_shared_storage, run_search
from raypose.tuning.space import SearchSpace
from raypose.tuning.trials import TrialResult, pick_best

log = logging.getLogger(__name__)

PARENT_STATE_FILE = "mlflow_parent.json"
# What the study writes into its folder: best/, Tune's state files and trial folders (Tune owns
# every subfolder), the Optuna copy and the parent run's id. `raypose tune` refuses an input there.
STUDY_FILES = ("*/**", "*.json", "*.pkl", OPTUNA_STUDY_FILE, PARENT_STATE_FILE)


@dataclass(frozen=True)
class StudyResult:
    """What a finished study found: every trial, the best and the baseline, the summary that
    ``best/metrics.json`` holds, where ``best/`` is (a path or a URI), and notes for the user
    (e.g. trials fitted to this machine)."""

    name: str
    trials: list[TrialResult]
    best: TrialResult
    baseline: TrialResult | None
    summary: dict[str, Any]
    best_dir: str
    parent_run_id: str | None
    notes: tuple[str, ...] = ()

    @property
    def report(self) -> str:
        return read_text(join(self.best_dir, "report.md")) or ""


def run_study(space: SearchSpace, resume: bool = False) -> StudyResult:
    """Run (or resume) the search, then evaluate and analyse the best checkpoint into ``best/``.

    Connects to ``$RAY_ADDRESS`` or starts Ray on this machine.

    Raises:
        ConfigError: storage or an MLflow store that other nodes cannot see on a cluster; a
            trial that asks for more than the cluster can ever give.
        RayposeError: no trial produced an evaluated checkpoint.
    """
    ensure_data(space.base.data)
    data = space.base.data
    check_training_annotations(data.path(data.train_ann), data.path(data.val_ann))  # before Ray starts
    init_ray(min_cpus=space.tune.max_concurrent * _cpus_per_trial(space) + 1)
    check_shared_storage(space)
    base, note = fit_to_cluster(space.base, driver_cpus=space.tune.trial_cpus)
    space = space.model_copy(update={"base": base})
    parent = _parent_run(space, resume)
    status = "FAILED"
    try:
        trials = run_search(space, parent.run_id if parent else None, resume)
        best, baseline = pick_best(trials)
        checkpoint_bytes = _retain_checkpoints(space, trials, best, baseline)
        best_dir = join(space.study_dir, "best")
        parent_ref = (space.base.mlflow.experiment, parent.uri, parent.run_id) if parent is not None else None
        args = (space, best, baseline, trials, best_dir, parent_ref, checkpoint_bytes)
        if final_stage_wants_gpu(space.base):
            # evaluating the full validation set twice is hours on a head node's CPUs
            summary, where = run_with_a_gpu(final_stage_into, *args)
        else:
            summary, where = final_stage_into(*args)
        log.info("final stage ran on %s", where)
        note = "; ".join(n for n in (note, f"final stage ran on {where}") if n)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if parent is not None:
            _end_parent(space, parent, status)
    return StudyResult(space.name, trials, best, baseline, summary, best_dir, parent.run_id if parent else None,
                       notes=(note,) if note else ())


def _retain_checkpoints(space: SearchSpace, trials: list[TrialResult], best: TrialResult,
                        baseline: TrialResult | None) -> dict[str, int]:
    """After the search, with ``tune.keep_checkpoints: best``: only the best trial's and the
    baseline's best checkpoints serve the final stage (and a resumed study's); every other
    trial's are deleted. Returns the checkpoint bytes each trial keeps."""
    from raypose.tuning.search import keep_only_checkpoints, train_run_name

    kept: dict[str, int] = {}
    for trial in trials:
        folder = join(space.train_storage, train_run_name(space, trial.trial_id))
        if space.tune.keep_checkpoints == "best":
            serves = trial.trial_id in {best.trial_id, baseline.trial_id if baseline else None}
            keep = {trial.best_checkpoint.rstrip("/").rsplit("/", 1)[-1]} if serves and trial.best_checkpoint else set()
            keep_only_checkpoints(folder, keep)
        kept[trial.trial_id] = folder_bytes(folder)
    log.info("checkpoints kept: %.1f MB over %d trials", sum(kept.values()) / 1e6, len(kept))
    return kept


def final_stage_into(space: SearchSpace, best: TrialResult, baseline: TrialResult | None, trials: list[TrialResult],
                     best_dir: str, parent_ref: tuple[str, str, str] | None,
                     checkpoint_bytes: dict[str, int] | None = None) -> tuple[dict[str, Any], str]:
    """The final stage, wherever it runs (here, or a Ray task on a GPU node): ``best/`` computed
    in a local folder, logged on the parent run (``(experiment, uri, run_id)``), then uploaded
    beside Tune's state (local, NFS or S3). Returns the summary and where it ran."""
    from raypose.training.ray_train import describe_here

    with tempfile.TemporaryDirectory(prefix="raypose-best-") as tmp:
        summary = final_stage(
            best, baseline, space.trial_config(best.params, name=f"{space.name}-best"), Path(tmp), trials,
            analyze=space.tune.final_analysis, worst=space.tune.worst, search=space.search,
            checkpoint_bytes=checkpoint_bytes, inference_options=space.tune.inference_options,
        )
        if parent_ref is not None:
            from raypose.experiment_log import MlflowRun

            experiment, uri, run_id = parent_ref
            parent = MlflowRun(experiment, uri=uri, run_id=run_id)
            if "search_oks_map" in parent.metrics():
                log.info("the parent run already holds this study's result: not logged again")
            else:
                _write_study_pages(space, Path(tmp))
                _log_summary(parent, summary, best, Path(tmp))
                _register_best_model(space, parent, summary, Path(tmp))
        upload_folder(Path(tmp), best_dir)
    return summary, describe_here()


def _end_parent(space: SearchSpace, parent, status: str) -> None:
    """End the parent run; an unfinished study ends its trials' open runs the same way."""
    if status != "FINISHED":
        from raypose.experiment_log import end_running_children

        end_running_children(space.base.mlflow.experiment, parent.run_id, parent.uri, status)
    parent.end(status)


def _cpus_per_trial(space: SearchSpace) -> float:
    """Logical CPUs a trial holds: its driver plus its Train workers."""
    return space.base.workers * space.base.cpus_per_worker + space.tune.trial_cpus


def _parent_run(space: SearchSpace, resume: bool):
    """The study's MLflow parent run: the one a resumed study started, else a new one."""
    base = space.base
    if not base.mlflow.enabled:
        return None
    from raypose.experiment_log import MlflowRun

    state_file = join(space.study_dir, PARENT_STATE_FILE)
    state = read_text(state_file) if resume else None
    run_id = json.loads(state)["run_id"] if state else None
    run = MlflowRun(base.mlflow.experiment, uri=base.mlflow.tracking_uri, run_id=run_id,
                    run_name=f"study-{space.name}", tags=parent_tags(space))
    if run_id is None:
        write_text(state_file, json.dumps({"run_id": run.run_id}))
        # the space, under the names the trials' params use: the only params, so that Compare and
        # the runs table show what was searched (the study's settings are tags)
        run.log_params({key: describe_dimension(alternatives) for key, alternatives in space.search.items()})
        run.log_artifact(space.source)
        from raypose.training.run import dataset_inputs

        run.log_inputs(dataset_inputs(base))
    return run


def parent_tags(space: SearchSpace) -> dict[str, str]:
    """The parent run's tags: the study, where Tune's state and the Optuna study are, the study's
    settings, and MLflow's source tags (program, git commit, user), which the trials inherit."""
    from raypose.experiment_log import source_tags
    from raypose.tuning.search import OPTUNA_STUDY_FILE

    tune = space.tune
    return {
        **source_tags(),
        "raypose.study": space.name,
        "raypose.tune_dir": space.tune_dir,  # tune.Tuner.restore(...), or raypose tune --resume
        "raypose.optuna_study": join(space.study_dir, OPTUNA_STUDY_FILE),
        "raypose.tune.num_samples": str(tune.num_samples), "raypose.tune.max_concurrent": str(tune.max_concurrent),
        "raypose.tune.asha": str(tune.asha.enabled), "raypose.tune.baseline": str(tune.baseline),
        "raypose.epochs": str(space.base.epochs), "raypose.workers_per_trial": str(space.base.workers),
    }


def describe_dimension(alternatives: list) -> str:
    """A searched dimension as one line: ``loguniform[0.0003, 0.003] when optim.name=adamw; ...``."""
    parts = []
    for dist in alternatives:
        spec = dist.model_dump(exclude_none=True, by_alias=True, exclude_defaults=True)
        when = spec.pop("when", None)
        text = " ".join(f"{kind}{list(value)}" for kind, value in spec.items())
        if when:
            text += " when " + ", ".join(f"{k}={v}" for k, v in when.items())
        parts.append(text)
    return "; ".join(parts)


def _write_study_pages(space: SearchSpace, best_dir: Path) -> None:
    """Beside report.md: report.html (MLflow's artifact viewer shows HTML, not Markdown) and
    Optuna's own plots of the study (its history and slice plots)."""
    from raypose.tuning.plots import plot_optuna_study
    from raypose.tuning.report_html import write_report_html
    from raypose.tuning.search import OPTUNA_STUDY_FILE, load_exported_study

    with tempfile.TemporaryDirectory(prefix="raypose-optuna-") as tmp:
        try:
            study = load_exported_study(join(space.study_dir, OPTUNA_STUDY_FILE), Path(tmp))
            if study is not None:
                plot_optuna_study(study, best_dir)
        except Exception:  # plots must never fail the study
            log.exception("Optuna's plots of the study could not be drawn")
    if (best_dir / "report.md").is_file():
        write_report_html(best_dir / "report.md", best_dir / "report.html")


def _log_summary(parent, summary: dict[str, Any], best: TrialResult, best_dir: Path) -> None:
    """The study's result on the parent run: its scores under their own names (chosen on the
    search's images, reported on the held-out ones), the best trial as a tag, ``best/`` as artifacts."""
    reported = "heldout_oks_map" if summary.get("held_out") else "validation_oks_map"
    parent.log_metrics({
        "search_oks_map": summary["search_oks_map"],  # the best trial's, on the images it was chosen on
        reported: summary["validation"]["AP"],
        "baseline_oks_map": summary["baseline_oks_map"] or 0.0,
        "gain_over_baseline": summary["gain_over_baseline"] or 0.0,
        "trial_epochs_saved": summary["trial_epochs_saved"],
    }, step=0)
    parent.set_tags({"raypose.best_trial": best.trial_id, "mlflow.note.content": summary["sentence"],
                     "raypose.inference": summary.get("inference", "stock")})
    # at the top of the run's artifacts, to see first
    for page in ("report.html", "trial_curves.png", "importances.png", "optuna_history.png", "optuna_slice.png"):
        if (best_dir / page).is_file():
            parent.log_artifact(best_dir / page)
    parent.log_artifact(best_dir, "best")


def _register_best_model(space: SearchSpace, parent, summary: dict[str, Any], best_dir: Path) -> None:
    """The best checkpoint as an MLflow PyTorch model on the parent run, registered as a new
    version of the model named after the study, the version tagged with the trial and its scores."""
    from raypose.experiment_log import register_pose_model, save_pose_model

    checkpoint = best_dir / CHECKPOINT_FILE
    example = first_validation_image(space.base)
    if not checkpoint.is_file() or example is None:
        log.warning("the best model is not registered: %s", "no checkpoint" if example else "no validation image")
        return
    tags = {"raypose.study": space.name, "raypose.trial_id": summary["best_trial"],
            "raypose.parent_run_id": parent.run_id, "search_oks_map": f"{summary['search_oks_map']:.4f}",
            ("heldout_oks_map" if summary.get("held_out") else "validation_oks_map"): f"{summary['validation']['AP']:.4f}",
            "raypose.inference": summary.get("inference", "stock")}
    try:
        with tempfile.TemporaryDirectory(prefix="raypose-model-") as tmp:
            model_dir = save_pose_model(checkpoint, example, Path(tmp) / "model")
            version = register_pose_model(parent.uri, parent.run_id, model_dir, space.name, tags,
                                          description=summary["sentence"])
    except Exception:  # best/checkpoint.pth is there either way: the study's result must not be lost
        log.exception("the best model could not be logged to MLflow's model registry at %s; best/%s holds it",
                      parent.uri, CHECKPOINT_FILE)
        return
    parent.set_tags({"raypose.registered_model": f"models:/{space.name}/{version}"})
    log.info("best model registered: models:/%s/%s (raypose predict models:/%s/%s IMAGES --out results.json)",
             space.name, version, space.name, version)


def first_validation_image(config) -> Path | None:
    """The first image of the validation set (the registered model's input example)."""
    from raypose.io import load_json

    data = config.data
    try:
        images = load_json(data.path(data.val_ann)).get("images", [])
    except Exception:
        return None
    return data.path(data.val_images) / images[0]["file_name"] if images else None
