"""The search's rules, checked without running trials: the baseline is never stopped early, only
epochs that were evaluated reach the searcher, deterministic failures are told apart on any
rank, and a lost worker is retried by Train inside the trial while a deterministic failure is not."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from raypose.errors import InputError, TrainingError
from raypose.training.config import validate_train_config
from raypose.training.ray_train import build_trainer, deterministic_failure
from raypose.tuning.search import BaselineKeepingASHA, CheckpointPruner, ConfigKeyOptunaSearch
from raypose.tuning.space import SpaceSampler


def trial(trial_id: str, kind: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"trial_kind": kind})


@pytest.mark.parametrize("kind", ["baseline", "search"])
def test_only_the_baseline_survives_a_poor_rung(kind):
    asha = BaselineKeepingASHA(time_attr="epoch", metric="oks_map", mode="max", max_t=4, grace_period=1,
                               reduction_factor=2)
    good, poor = trial("good", "search"), trial("poor", kind)
    for t in (good, poor):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, {"epoch": 1, "oks_map": 0.5}) == asha.CONTINUE
    action = asha.on_trial_result(None, poor, {"epoch": 1, "oks_map": 0.1})
    assert action == (asha.CONTINUE if kind == "baseline" else asha.STOP)
    # at the full budget the baseline ends as any trial does
    assert asha.on_trial_result(None, poor, {"epoch": 4, "oks_map": 0.1}) == asha.STOP


def test_results_without_a_score_do_not_reach_optuna(tiny_train_config, tmp_path):
    from raypose.tuning.space import SearchSpace, TuneSettings

    space = SearchSpace(source="s.yaml", base=validate_train_config(tiny_train_config), search={},
                        tune=TuneSettings(baseline=False))
    search = ConfigKeyOptunaSearch(space=SpaceSampler(space), metric="oks_map", mode="max")
    search.suggest("t1")
    search.on_trial_result("t1", {"epoch": 1, "evaluated": 0, "training_iteration": 1})  # no KeyError
    search.on_trial_result("t1", {"epoch": 2, "oks_map": 0.3, "training_iteration": 2})
    reported = search._ot_trials["t1"].storage.get_trial(search._ot_trials["t1"]._trial_id).intermediate_values
    assert reported == {2: 0.3}


class WorkerFailure(Exception):
    """Ray's error shape: ``worker_failures`` maps a rank to the worker's failure."""

    def __init__(self, cause: BaseException, others: dict[int, BaseException] | None = None):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = {rank: SimpleNamespace(cause=c) for rank, c in {0: cause, **(others or {})}.items()}


class OutOfMemoryError(RuntimeError):
    pass


@pytest.mark.parametrize(("cause", "kind"), [
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    (TrainingError("non-finite loss at epoch 0, step 3: loss_keypoint=nan"), "non-finite loss"),
    (ConnectionError("node 10.0.0.3 died"), None),
    (RuntimeError("NCCL timeout"), None),
    (InputError("data not found on node 10.0.0.3: /data/annotations"), "bad input"),
])
def test_deterministic_failures_are_told_apart(cause, kind):
    assert deterministic_failure(WorkerFailure(cause)) == kind


def test_every_rank_is_read_not_only_the_lowest():
    """Rank 3 ran out of memory; rank 0 saw only the collective's side effect."""
    from raypose.training.ray_train import describe_failure

    error = WorkerFailure(RuntimeError("[gloo] Connection closed by peer"),
                          {3: OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")})
    assert deterministic_failure(error) == "out of memory"
    assert describe_failure(error).startswith("worker 3: OutOfMemoryError: CUDA out of memory")
    lost = WorkerFailure(RuntimeError("[gloo] Connection closed by peer"), {1: ConnectionError("actor died")})
    assert deterministic_failure(lost) is None
    assert describe_failure(lost).startswith("worker 0: RuntimeError")


def test_a_lost_worker_is_retried_by_train_and_a_deterministic_failure_is_not(tiny_train_config):
    from ray.train.v2._internal.execution.failure_handling import FailureDecision
    from ray.train.v2.api.exceptions import WorkerGroupError

    from raypose.training.ray_train import _make_failure_policy

    cfg = validate_train_config({**tiny_train_config, "workers": 1})
    failure_config = build_trainer(cfg).run_config.failure_config
    assert failure_config.max_failures == 2  # the config's default
    assert build_trainer(validate_train_config({**tiny_train_config, "workers": 1, "max_failures": 0})
                         ).run_config.failure_config.max_failures == 0
    policy = _make_failure_policy(failure_config)
    lost = WorkerGroupError("rank 1 died", {1: ConnectionError("The actor died unexpectedly")})
    decisions = [policy.make_decision(lost) for _ in range(3)]
    assert decisions == [FailureDecision.RETRY, FailureDecision.RETRY, FailureDecision.RAISE]
    oom = WorkerGroupError("oom", {0: RuntimeError("[gloo] Connection closed by peer"),
                                   2: OutOfMemoryError("CUDA out of memory")})
    assert _make_failure_policy(failure_config).make_decision(oom) == FailureDecision.RAISE


def test_a_resumed_trial_keeps_the_curve_and_best_checkpoint_from_before_the_interruption(tiny_train_config):
    """Tune forgets a function trial's results from before a restore: after resuming at epoch 3,
    its results hold epochs 3-4 only (and a trial that had trained its last epoch reports again
    without a checkpoint). The reported curve still has epochs 1-4, so the best epoch (2, before
    the interruption) and its checkpoint folder in the trial's Train run are found."""
    import json

    import pandas as pd

    from raypose.training.run import OKS_CURVE
    from raypose.tuning.search import _trial_result
    from raypose.tuning.space import SearchSpace

    base = validate_train_config({**tiny_train_config, "workers": 1})
    space = SearchSpace(source="st.yaml", base=base, search={}, tune={"name": "st", "storage_path": "s3://bucket/study"})
    curve = [[1, 0.1], [2, 0.6], [3, 0.4], [4, 0.5]]
    df = pd.DataFrame({
        "epoch": [3, 4], "oks_map": [0.4, 0.5], OKS_CURVE: [json.dumps(curve[:3]), json.dumps(curve)],
        "checkpoint_path": ["bucket/study/st_train/st-t1/epoch_0003", None],
    })
    result = SimpleNamespace(config={"trial_kind": "search", "optim.lr": 0.01}, metrics={"trial_id": "t1"},
                             metrics_dataframe=df, path="/x/t1", error=None)
    trial_result = _trial_result(result, space)
    assert trial_result.history == ((1, 0.1), (2, 0.6), (3, 0.4), (4, 0.5))
    assert (trial_result.best_epoch, trial_result.best_oks_map, trial_result.epochs) == (2, 0.6, 4)
    assert trial_result.best_checkpoint == f"{space.train_storage}/st-t1/epoch_0002"
    assert trial_result.best_checkpoint.startswith("s3://bucket/study/")
    # without a curve (results from before this change): the results Tune has
    legacy = _trial_result(SimpleNamespace(**{**vars(result), "metrics_dataframe": df.drop(columns=[OKS_CURVE])}), space)
    assert (legacy.best_epoch, legacy.best_checkpoint, legacy.history) == (4, None, ())


def ended(trial_id: str, kind: str, curve: list[list[float]], failed: bool = False) -> SimpleNamespace:
    """A trial as Tune passes it to a callback when it ends (``failed``: its last report is the failure's)."""
    import json

    last = {"oks_map": 0.0, "failure": "OutOfMemory: ..."} if failed else {"oks_map_curve": json.dumps(curve)}
    return SimpleNamespace(trial_id=trial_id, config={"trial_kind": kind}, last_result=last)


def test_ended_trials_keep_only_checkpoints_that_can_still_serve(tmp_path):
    """tune.keep_checkpoints: best. An ended trial keeps its best checkpoint only while no ended
    trial ranks above it (pick_best's order: score, then the baseline, then the lower id); the
    baseline always keeps its best; the latest and mid-epoch checkpoints go at once."""
    space = SimpleNamespace(name="s", train_storage=str(tmp_path))
    for trial_id in ("base", "t1", "t2", "t3", "t4"):
        for name in ("epoch_0001", "epoch_0002", "epoch_0002_step_000004", "epoch_0003"):
            (tmp_path / f"s-{trial_id}" / name).mkdir(parents=True)
    left = lambda trial_id: sorted(p.name for p in (tmp_path / f"s-{trial_id}").iterdir())  # noqa: E731
    pruner = CheckpointPruner(space)
    pruner.on_trial_complete(0, [], ended("t1", "search", [[1, 0.2], [2, 0.3], [3, 0.3]]))
    assert left("t1") == ["epoch_0003"]  # the leader so far; ties go to the later epoch
    pruner.on_trial_complete(0, [], ended("base", "baseline", [[1, 0.1], [2, 0.25], [3, 0.2]]))
    assert left("base") == ["epoch_0002"]  # beaten, but the final stage evaluates the baseline too
    pruner.on_trial_complete(0, [], ended("t2", "search", [[1, 0.1]]))  # stopped early by ASHA, beaten
    assert left("t2") == []
    pruner.on_trial_complete(0, [], ended("t3", "search", [[1, 0.3], [2, 0.5]]))
    assert left("t3") == ["epoch_0002"] and left("t1") == []  # the new leader; the old one can no longer serve
    # a failure report carries no curve: the curve it reported before counts
    pruner.on_trial_result(0, [], ended("t4", "search", []), {"oks_map_curve": "[[1, 0.5]]"})
    pruner.on_trial_complete(0, [], ended("t4", "search", [], failed=True))
    assert left("t4") == [] and left("t3") == ["epoch_0002"]  # a tie goes to the lower id, t3
    assert left("base") == ["epoch_0002"]
    # a trial whose curve it never saw (it ended right after a resume) is left alone
    (tmp_path / "s-t5" / "epoch_0001").mkdir(parents=True)
    pruner.on_trial_complete(0, [], ended("t5", "search", [], failed=True))
    assert left("t5") == ["epoch_0001"]
