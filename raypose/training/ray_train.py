"""The one module that talks to Ray Train (Ray 2.60, Train V2 API).

:func:`build_trainer` makes a ``TorchTrainer`` whose workers run
:func:`raypose.training.run.run_training` with a :class:`RaySession`; :func:`fit` runs one. NCCL and one GPU per worker where GPUs exist, gloo on CPU (Ray Train
picks the backend). A run started again with the same ``name`` and ``storage_path`` finds its
checkpoints in storage and resumes from the latest.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import ray.train
import ray.util
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raypose.checkpoint import CHECKPOINT_FILE, load_checkpoint
from raypose.data.prepare import require_data
from raypose.errors import ConfigError, TrainingError
from raypose.training.config import TrainConfig
from raypose.training.resources import Capacity, TrialRequest, describe_request, fit_trial
from raypose.training.run import CHECKPOINT_SCORE, run_training

log = logging.getLogger(__name__)

# Whether init_ray started Ray on this machine (its size is then known and fixed) rather than
# connecting to a cluster; ray.is_initialized() cannot tell the two apart.
_started_here = False


class RaySession:
    """:class:`raypose.training.sessions.Session` on a Ray Train worker."""

    def __init__(self) -> None:
        context = ray.train.get_context()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()

    def latest_checkpoint(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / CHECKPOINT_FILE)

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(
            metrics,
            checkpoint=checkpoint,
            checkpoint_dir_name=checkpoint_dir_name(int(metrics["epoch"])),
        )

    def already_finished(self, last_metrics: dict[str, float]) -> None:
        """Report the last epoch again (without a checkpoint), so a Tune trial restored after an
        interruption ends with its real last result."""
        ray.train.report(last_metrics)


def checkpoint_dir_name(epoch: int) -> str:
    """The folder of epoch ``epoch``'s checkpoint in a Train run's storage (``epoch_0003``)."""
    return f"epoch_{epoch:04d}"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker: ``{"config": TrainConfig}``, validated on the driver."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config: TrainConfig = loop_config["config"]
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    # The data is never uploaded with a job: each node reads it from its own disk or mount.
    require_data(config.data, node=f"{ray.util.get_node_ip_address()} ({socket.gethostname()})")
    run_training(config, RaySession())


def init_ray(min_cpus: float = 1.0) -> None:
    """Connect to the cluster at ``$RAY_ADDRESS``, or start a local Ray instance.

    A local instance advertises at least ``min_cpus`` logical CPUs: a Tune trial plus its Train
    workers each hold a CPU slot, which on a small machine is more slots than cores. The
    threads per worker are set from ``cpus_per_worker`` either way.
    """
    import ray

    global _started_here
    if ray.is_initialized():
        return
    if connected_to_cluster():
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    num_cpus = max(os.cpu_count() or 1, int(-(-min_cpus // 1)))
    # The dashboard serves the State API, which Train V2 uses to clean up the placement groups of
    # trials that Tune stops early: without it their CPUs and GPUs leak until Ray shuts down.
    ray.init(num_cpus=num_cpus, include_dashboard=True, log_to_driver=True)
    _started_here = True


def connected_to_cluster() -> bool:
    """Whether raypose runs on a Ray cluster it did not start: ``$RAY_ADDRESS`` names one (Ray
    sets it for every job's driver). Such a cluster may have, or get, other nodes at any time."""
    return os.environ.get("RAY_ADDRESS", "") not in ("", "local")


def cluster_capacity() -> Capacity:
    """The most the connected cluster can ever give: the autoscaler's maximum where there is
    one (the nodes may not be up yet), else the resources of its nodes."""
    import ray
    from ray._private.state import state  # the autoscaler's config, as Ray Train's own check reads it

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    try:
        config = state.get_cluster_config()
        most = (state.get_max_resources_from_cluster_config() or {}) if config else {}
        groups = [dict(g.resources) for g in config.node_group_configs] if config else []
    except Exception:  # an older GCS without the autoscaler's state: take the nodes as they are
        most, groups = {}, []
    total = ray.cluster_resources()

    def node_max(key: str) -> float:
        return max([float(r.get(key, 0)) for r in nodes + groups], default=0.0)

    return Capacity(cpus=max(total.get("CPU", 0.0), most.get("CPU", 0)), gpus=max(total.get("GPU", 0.0), most.get("GPU", 0)),
                    node_cpus=node_max("CPU"), node_gpus=node_max("GPU"))


def fit_to_cluster(config: TrainConfig, driver_cpus: float = 0.0) -> tuple[TrainConfig, str | None]:
    """``config``, checked to fit the cluster: returned as it is when it fits; fitted (fewer
    workers, a smaller share of a node) on a machine where raypose started Ray, with a note
    saying so; refused otherwise.

    Raises:
        ConfigError: the trial asks for more than the cluster can ever give (the GPUs and CPUs
            asked for and available, and the ``--set`` that fits).
    """
    gpu = use_gpu(config)
    request = TrialRequest(config.workers, config.cpus_per_worker, config.gpus_per_worker if gpu else 0.0,
                           driver_cpus)
    fitted = fit_trial(request, cluster_capacity(), adjust=_started_here)
    if fitted == request:
        return config, None
    note = (f"a trial asked for {describe_request(request)}, more than this machine has: fitted to "
            f"{describe_request(fitted)}")
    log.warning(note)
    update = {"workers": fitted.workers, "cpus_per_worker": fitted.cpus_per_worker}
    if gpu:
        update["gpus_per_worker"] = fitted.gpus_per_worker
    return config.model_copy(update=update), note


def use_gpu(config: TrainConfig) -> bool:
    """Whether workers get a GPU: as the config says; ``auto`` means yes when the Ray cluster
    has GPUs now (an autoscaling cluster may have none yet: cluster configs say ``true``)."""
    if config.use_gpu != "auto":
        return bool(config.use_gpu)
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def build_trainer(config: TrainConfig, callbacks: list | None = None, max_failures: int = 0) -> TorchTrainer:
    """A ``TorchTrainer`` for ``config`` (``config.workers`` >= 1).

    Raises:
        ConfigError: ``workers`` is 0 (that is the local mode, which needs no Ray).
    """
    if config.workers < 1:
        raise ConfigError("workers: 0 means local mode; Ray Train needs workers >= 1")
    gpu = use_gpu(config)
    resources = {"CPU": config.cpus_per_worker}
    if gpu:
        resources["GPU"] = config.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=config.name,
            storage_path=config.storage_path,  # absolute or a URI (resolve_config)
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.keep_checkpoints,
                checkpoint_score_attribute=CHECKPOINT_SCORE,  # evaluated epochs only; the latest is kept too
                checkpoint_score_order="max",
            ),
            callbacks=callbacks,
            # Ray Train's print patch logs every print, even one inside contextlib.redirect_stdout;
            # pycocotools prints a table per evaluation that raypose already logs as numbers.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
    )


def fit(config: TrainConfig, max_failures: int = 0) -> ray.train.Result:
    """Run the training on Ray Train and return its result (metrics, best checkpoints).

    Raises:
        TrainingError: the run failed; the message is the failing worker's own error (e.g. a
            non-finite loss with its components), not Ray's wrapper around it.
    """
    config, _ = fit_to_cluster(config)
    try:
        result = build_trainer(config, max_failures=max_failures).fit()
    except ray.train.TrainingFailedError as e:
        raise TrainingError(f"training failed: {describe_failure(e)}") from e
    if result.error is not None:
        raise TrainingError(f"training failed: {describe_failure(result.error)}")
    return result


# Failures that happen again on every retry: the search should learn from them, not retry them.
DETERMINISTIC_FAILURES = {"out of memory": ("OutOfMemoryError", "CUDA out of memory"),
                          "non-finite loss": ("non-finite loss",)}


def deterministic_failure(error: BaseException) -> str | None:
    """``"out of memory"`` or ``"non-finite loss"`` when a run failed for a reason retrying will not
    fix (from the failing worker's own error, as :func:`describe_failure` gives it), else None."""
    text = describe_failure(error)
    return next((kind for kind, marks in DETERMINISTIC_FAILURES.items() if any(m in text for m in marks)), None)


def run_trial(trainer: TorchTrainer) -> tuple[str | None, str | None]:
    """Run one search trial's training: ``(None, None)`` when it finished, ``(kind, message)`` when it
    failed deterministically (see :func:`deterministic_failure`).

    Raises:
        Exception: any other failure (a lost node, say), for Tune to retry from the last checkpoint.
    """
    try:
        result = trainer.fit()
        error = result.error
    except ray.train.TrainingFailedError as e:
        error = e
    if error is None:
        return None, None
    kind = deterministic_failure(error)
    if kind is None:
        raise error
    return kind, describe_failure(error)


def describe_failure(error: BaseException) -> str:
    """The first failing worker's exception as one line, unwrapped from Ray's error types."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, failure = min(failures.items())
        cause = getattr(failure, "cause", None) or failure
        return f"worker {rank}: {type(cause).__name__}: {cause}"
    cause = getattr(error, "controller_failure", None) or error
    return f"{type(cause).__name__}: {cause}"
