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
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.util
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    CheckpointUploadMode,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from raypose.checkpoint import CHECKPOINT_FILE, load_checkpoint
from raypose.data.prepare import require_data
from raypose.errors import ConfigError, TrainingError
from raypose.storage import folder_bytes
from raypose.training.config import TrainConfig
from raypose.training.resources import (
    Capacity,
    TrialRequest,
    describe_capacity,
    describe_request,
    fit_trial,
    fits,
)
from raypose.training.run import CHECKPOINT_SCORE, run_training
from raypose.training.sessions import StoredCheckpoint

log = logging.getLogger(__name__)

# Whether init_ray started Ray on this machine (its size is then known and fixed) rather than
# connecting to a cluster; ray.is_initialized() cannot tell the two apart.
_started_here = False


class RaySession:
    """:class:`raypose.training.sessions.Session` on a Ray Train worker.

    Checkpoints go to Train's storage asynchronously by default (``checkpoint_upload``): the
    report returns at once, the upload runs in Train's background thread, and Train registers
    the checkpoint (the one a restart resumes from, the one Tune sees) only once it is stored
    whole, in report order. The local folder is deleted after its upload either way.
    """

    def __init__(self, upload: str = "async") -> None:
        context = ray.train.get_context()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.device = ray.train.torch.get_device()
        self.mode = CheckpointUploadMode.ASYNC if upload == "async" else CheckpointUploadMode.SYNC
        self.stored: list[StoredCheckpoint] = []  # appended by the upload thread
        self._storage = context.get_storage()

    def latest_checkpoint(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / CHECKPOINT_FILE)

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self._report(metrics, checkpoint_dir, checkpoint_dir_name(int(metrics["epoch"])))

    def save_progress(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self._report(metrics, checkpoint_dir,
                     f"{checkpoint_dir_name(int(metrics['epoch']))}_step_{int(metrics['epoch_step']):06d}")

    def _report(self, metrics: dict[str, float], checkpoint_dir: Path | None, name: str) -> None:
        checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        ray.train.report(
            metrics, checkpoint=checkpoint, checkpoint_dir_name=name,
            checkpoint_upload_mode=self.mode, delete_local_checkpoint_after_upload=checkpoint is not None,
            checkpoint_upload_fn=self._upload if checkpoint is not None else None,
        )

    def _upload(self, checkpoint: Checkpoint, name: str) -> Checkpoint:
        """Train's own upload (pyarrow, to the run's storage), timed."""
        start, size = time.perf_counter(), folder_bytes(checkpoint.path)
        stored = self._storage.persist_current_checkpoint(checkpoint, name)
        self.stored.append(StoredCheckpoint(name, time.perf_counter() - start, size))
        log.info("checkpoint %s stored: %.1f MB in %.2f s (%s)", name, size / 1e6, self.stored[-1].seconds,
                 "in the background" if self.mode == CheckpointUploadMode.ASYNC else "training waited")
        return stored

    def preemption_pending(self) -> bool:
        """Ray Train's preemption notice (a barrier: every rank asks at the same step)."""
        return ray.train.get_preemption_info() is not None

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
    run_training(config, RaySession(config.checkpoint_upload))


def init_ray(min_cpus: float = 1.0) -> None:
    """Connect to the cluster at ``$RAY_ADDRESS``, or start a local Ray instance.

    A local instance advertises at least ``min_cpus`` logical CPUs: a Tune trial plus its Train
    workers each hold a CPU slot, which on a small machine is more slots than cores. The
    threads per worker are set from ``cpus_per_worker`` either way.
    """
    import ray

    from raypose.stop_signals import reinstall_after_ray

    global _started_here
    if ray.is_initialized():
        return
    if connected_to_cluster():
        check_ray_address()  # ray.init would wait forever on a dead address
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        reinstall_after_ray()  # ray.init made SIGTERM a sys.exit: raypose's stops as Ctrl-C does
        return
    num_cpus = max(os.cpu_count() or 1, int(-(-min_cpus // 1)))
    # The dashboard serves the State API, which Train V2 uses to clean up the placement groups of
    # trials that Tune stops early: without it their CPUs and GPUs leak until Ray shuts down.
    ray.init(num_cpus=num_cpus, include_dashboard=True, log_to_driver=True)
    reinstall_after_ray()
    _started_here = True


RAY_ADDRESS_FORMS = (
    "HOST:PORT (the head's GCS port, 6379 unless `ray start --port` chose another), ray://HOST:PORT, "
    "auto or local"
)


def check_ray_address(timeout_s: float = 5.0) -> None:
    """Check, before any work, that the cluster ``$RAY_ADDRESS`` names answers (nothing to do
    without one, or with ``local``).

    ``ray.init`` retries a dead address forever (``RAY_gcs_rpc_server_connect_timeout_s`` only
    turns into a warning), so this opens one TCP connection to its port first: the GCS port for
    ``HOST:PORT``, the Ray Client server's for ``ray://HOST:PORT`` (default 10001). ``auto``
    is first resolved as Ray does, to the last cluster ``ray start`` started on this machine.

    Raises:
        ConfigError: the address is malformed, ``auto`` finds no cluster, or nothing accepts a
            connection at it within ``timeout_s``.
    """
    address = os.environ.get("RAY_ADDRESS", "")
    if address in ("", "local"):
        return
    target = address
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address("auto")
        except ConnectionError:
            raise ConfigError("RAY_ADDRESS=auto: no Ray cluster was started on this machine; start one with "
                              "`ray start --head`, or unset RAY_ADDRESS and raypose starts Ray itself") from None
    host, port = _host_port(target, address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(
            f"RAY_ADDRESS={address}: no Ray cluster answers at {host}:{port} ({e.strerror or e}; waited up to "
            f"{timeout_s:g} s): start the cluster (`ray start --head` on its head node) or check the address "
            "(`ray status` on the head prints it), or unset RAY_ADDRESS and raypose starts Ray itself"
        ) from None


def _host_port(target: str, address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST[:PORT]``."""
    rest = target.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = rest.partition(":")
    if not port and target.startswith("ray://"):
        port = "10001"  # the Ray Client server's default port
    if not host or not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS={address}: not a Ray address; use {RAY_ADDRESS_FORMS}")
    return host, int(port)


def connected_to_cluster() -> bool:
    """Whether raypose runs on a Ray cluster it did not start: ``$RAY_ADDRESS`` names one (Ray
    sets it for every job's driver). Such a cluster may have, or get, other nodes at any time."""
    return os.environ.get("RAY_ADDRESS", "") not in ("", "local")


def cluster_capacity() -> Capacity:
    """The most the connected cluster can ever give, where that is known: the autoscaler's
    maximum where Ray publishes its config (the nodes may not be up yet), else the resources of
    the nodes alive now. :func:`autoscaler_adds_nodes` says whether the latter may grow."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most, groups = published_maximum()  # the autoscaler's config, as Ray Train's own check reads it
    total = ray.cluster_resources()

    def node_max(key: str) -> float:
        return max([float(r.get(key, 0)) for r in nodes + groups], default=0.0)

    return Capacity(cpus=max(total.get("CPU", 0.0), most.get("CPU", 0)), gpus=max(total.get("GPU", 0.0), most.get("GPU", 0)),
                    node_cpus=node_max("CPU"), node_gpus=node_max("GPU"))


def published_maximum() -> tuple[dict[str, float], list[dict[str, float]]]:
    """The autoscaler's maximum resources and its node types' resources, where Ray publishes the
    autoscaler's config in the GCS (``({}, [])`` where it does not: Ray 2.60's ``ray up`` and
    KubeRay autoscalers do not)."""
    from ray._private.state import state

    try:
        config = state.get_cluster_config()
        most = (state.get_max_resources_from_cluster_config() or {}) if config else {}
        groups = [dict(g.resources) for g in config.node_group_configs] if config else []
    except Exception:  # an older GCS without the autoscaler's state
        return {}, []
    return most, groups


def autoscaler_adds_nodes() -> bool:
    """Whether an autoscaler that can add nodes reports to the cluster: Ray's autoscaler v2, or
    a v1 monitor whose status (what ``ray status`` shows) names node types of a config. Every
    `ray start --head` runs a monitor; on a fixed cluster it mirrors the nodes as read-only node
    types named ``node_<node id>``, which is how the two are told apart."""
    import json

    import ray
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        if is_autoscaler_v2(fetch_from_server=True):
            return True
        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    except Exception:  # no GCS to ask: nothing will add nodes
        return False
    report = (json.loads(raw) if raw else {}).get("autoscaler_report") or {}
    node_ids = {n["NodeID"] for n in ray.nodes()}
    types = set(report.get("active_nodes") or {}) | set(report.get("pending_launches") or {})
    types |= {t for _, t, *_ in report.get("pending_nodes") or []}
    return any(not (t.startswith("node_") and t[len("node_"):] in node_ids) for t in types)


def fit_to_cluster(config: TrainConfig, driver_cpus: float = 0.0) -> tuple[TrainConfig, str | None]:
    """``config``, checked to fit the cluster: returned as it is when it fits, or when an
    autoscaler may still add the nodes it needs and their maximum is not published (the run then
    waits for them, as Ray Train itself does; logged once, with what it waits for); fitted (fewer
    workers, a smaller share of a node) on a machine where raypose started Ray, with a note
    saying so; refused otherwise.

    Raises:
        ConfigError: the trial asks for more than the cluster can ever give (the GPUs and CPUs
            asked for and available, and the ``--set`` that fits).
    """
    gpu = use_gpu(config)
    request = TrialRequest(config.workers, config.cpus_per_worker, config.gpus_per_worker if gpu else 0.0,
                           driver_cpus)
    capacity = cluster_capacity()
    if not fits(request, capacity) and not _started_here and not published_maximum()[0] and autoscaler_adds_nodes():
        note = (f"a trial asks for {describe_request(request)}; the cluster has {describe_capacity(capacity)} now. "
                "Waiting for the autoscaler to add nodes (its maximum is not published, so it is not checked here)")
        log.warning(note)
        return config, note
    fitted = fit_trial(request, capacity, adjust=_started_here)
    if fitted == request:
        return config, None
    note = (f"a trial asked for {describe_request(request)}, more than this machine has: fitted to "
            f"{describe_request(fitted)}")
    log.warning(note)
    update = {"workers": fitted.workers, "cpus_per_worker": fitted.cpus_per_worker}
    if gpu:
        update["gpus_per_worker"] = fitted.gpus_per_worker
    return config.model_copy(update=update), note


def final_stage_wants_gpu(config: TrainConfig) -> bool:
    """Whether work after the search (the final stage) should run as a Ray task with a GPU: the
    cluster has one now, or an autoscaler can add one and the config trains on GPUs."""
    import ray

    if ray.cluster_resources().get("GPU", 0) >= 1:
        return True
    return config.use_gpu is True and autoscaler_adds_nodes()


def run_with_a_gpu(function, *args):
    """``function(*args)`` as a Ray task holding one GPU (and one CPU); returns its result."""
    import ray

    log.info("running %s as a Ray task with one GPU", function.__name__)
    return ray.get(ray.remote(num_gpus=1, num_cpus=1, max_retries=0)(function).remote(*args))


def describe_here() -> str:
    """This process's node and device, for "ran on" lines: ``10.0.0.5 (host): GPU NVIDIA H100``."""
    import ray

    node = ray.util.get_node_ip_address() if ray.is_initialized() else "this machine"
    device = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    return f"{node} ({socket.gethostname()}): {device}"


def use_gpu(config: TrainConfig) -> bool:
    """Whether workers get a GPU: as the config says; ``auto`` means yes when the Ray cluster
    has GPUs now (an autoscaling cluster may have none yet: cluster configs say ``true``)."""
    if config.use_gpu != "auto":
        return bool(config.use_gpu)
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def build_trainer(config: TrainConfig, callbacks: list | None = None) -> TorchTrainer:
    """A ``TorchTrainer`` for ``config`` (``config.workers`` >= 1). A lost worker or node is
    restored by Train from the run's last checkpoint, up to ``config.max_failures`` times.

    Raises:
        ConfigError: ``workers`` is 0 (that is the local mode, which needs no Ray).
    """
    if config.workers < 1:
        raise ConfigError("workers: 0 means local mode; Ray Train needs workers >= 1")
    gpu = use_gpu(config)
    resources = {"CPU": config.cpus_per_worker}
    if gpu:
        resources["GPU"] = config.gpus_per_worker
    return RayposeTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config},
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=gpu, resources_per_worker=resources,
                                     placement_strategy=config.placement_strategy),
        run_config=RunConfig(
            name=config.name,
            storage_path=config.storage_path,  # absolute or a URI (resolve_config)
            failure_config=FailureConfig(max_failures=config.max_failures),
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


def fit(config: TrainConfig) -> ray.train.Result:
    """Run the training on Ray Train and return its result (metrics, best checkpoints).

    Raises:
        TrainingError: the run failed; the message is the failing worker's own error (e.g. a
            non-finite loss with its components), not Ray's wrapper around it.
    """
    config, _ = fit_to_cluster(config)
    config = with_mlflow_run(config)
    try:
        result = build_trainer(config).fit()
    except ray.train.TrainingFailedError as e:
        raise TrainingError(f"training failed: {describe_failure(e)}") from e
    if result.error is not None:
        raise TrainingError(f"training failed: {describe_failure(result.error)}")
    return result


MLFLOW_RUN_FILE = "mlflow_run.json"  # in a Train run's folder: the MLflow run it logs into


def with_mlflow_run(config: TrainConfig) -> TrainConfig:
    """``config`` with the MLflow run its workers log into, made once on the driver and kept in
    the run's folder (local or S3). Workers that Train restarts after a lost worker, before the
    first checkpoint was stored, then log into the same run instead of starting a second."""
    if not config.mlflow.enabled or config.mlflow.run_id:
        return config
    import json

    from raypose.experiment_log import create_run
    from raypose.storage import join, read_text, write_text
    from raypose.training.config import identity_tags

    record = join(config.run_dir, MLFLOW_RUN_FILE)
    saved = read_text(record)
    if saved:
        run_id = json.loads(saved)["run_id"]
    else:
        run_id = create_run(config.mlflow.experiment, config.mlflow.tracking_uri, config.mlflow.run_name or config.name,
                            tags={**identity_tags(config), **config.mlflow.tags})
        write_text(record, json.dumps({"run_id": run_id}))
    return config.model_copy(update={"mlflow": config.mlflow.model_copy(update={"run_id": run_id})})


# Failures that happen again on every retry: the search should learn from them, not retry them.
DETERMINISTIC_FAILURES = {"out of memory": ("OutOfMemoryError", "CUDA out of memory", "out of memory"),
                          "non-finite loss": ("non-finite loss",),
                          "bad input": ("InputError", "ConfigError", "data not found on node")}


def worker_causes(error: BaseException) -> dict[int, BaseException]:
    """Each failed rank's own exception, unwrapped from Ray's error types (``{-1: error}`` when the
    failure is not a worker's, e.g. the controller's)."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        return {rank: getattr(failure, "cause", None) or failure for rank, failure in sorted(failures.items())}
    return {-1: getattr(error, "controller_failure", None) or error}


def _kind_of(cause: BaseException) -> str | None:
    from raypose.errors import ConfigError, InputError

    if isinstance(cause, (InputError, ConfigError)):
        return "bad input"
    text = f"{type(cause).__name__}: {cause}"
    return next((kind for kind, marks in DETERMINISTIC_FAILURES.items() if any(m in text for m in marks)), None)


def deterministic_failure(error: BaseException) -> str | None:
    """``"out of memory"``, ``"non-finite loss"`` or ``"bad input"`` when any rank failed for a reason
    retrying will not fix, else None. Every rank's error is read: an out-of-memory on rank 3 leaves
    rank 0 with a collective's side effect (a closed connection), which alone would look retryable."""
    return next((kind for kind in map(_kind_of, worker_causes(error).values()) if kind is not None), None)


def _make_failure_policy(failure_config: FailureConfig):
    """Ray Train's default policy (lost workers and nodes retried up to ``max_failures``), except that
    a deterministic failure (:func:`deterministic_failure`) is raised at once instead of retried."""
    from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision

    class DeterministicFailuresRaise(DefaultFailurePolicy):
        def make_decision(self, training_failed_error):
            kind = deterministic_failure(training_failed_error)
            if kind is not None:
                log.warning("not retried (%s): %s", kind, describe_failure(training_failed_error))
                return FailureDecision.RAISE
            return super().make_decision(training_failed_error)

    return DeterministicFailuresRaise(failure_config)


class RayposeTrainer(TorchTrainer):
    """``TorchTrainer`` whose failure policy never retries a deterministic failure.

    Ray 2.60 builds the policy inside ``DataParallelTrainer.fit`` from the module-level
    ``create_failure_policy``, with no public hook; ``fit`` swaps that name for the duration of
    the call (the trainer's driver is its own process: a trial's driver runs one fit at a time).
    Where a later Ray moves it, the default policy applies (retries count against max_failures).
    """

    def fit(self):
        import ray.train.v2.api.data_parallel_trainer as dpt

        original = getattr(dpt, "create_failure_policy", None)
        if original is None:
            return super().fit()
        dpt.create_failure_policy = _make_failure_policy
        try:
            return super().fit()
        finally:
            dpt.create_failure_policy = original


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
    """The failure as one line, unwrapped from Ray's error types: the first rank whose error is
    deterministic (:func:`deterministic_failure`), else the lowest failed rank."""
    causes = worker_causes(error)
    # a rank that saw the failure itself before one that only heard of it from another rank
    candidates = sorted(((r, c) for r, c in causes.items() if _kind_of(c) is not None),
                        key=lambda rc: "on another rank" in str(rc[1]))
    rank, cause = candidates[0] if candidates else next(iter(causes.items()))
    return f"{type(cause).__name__}: {cause}" if rank < 0 else f"worker {rank}: {type(cause).__name__}: {cause}"
