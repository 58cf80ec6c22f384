"""The one module that talks to MLflow: experiments, runs, params, metrics, tags, artifacts.

Training logs from rank 0 only. A run's MLflow id is stored in its checkpoints, so a resumed
run keeps logging into the same MLflow run instead of starting a duplicate. Nothing here sets
MLflow's global state: every call names its tracking URI.

Conventions the MLflow UI relies on:
- params are what a user compares (the training config without run identity); run identity
  (name, storage folder, parent and trial ids) goes in tags;
- experiments are created as model-training experiments (``mlflow.experimentKind``), so MLflow
  3's UI opens on the runs table rather than the GenAI overview.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# MLflow limits a param value to 6000 characters (older servers: 500); long lists are truncated.
MAX_PARAM_CHARS = 500
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_ID_TAG = "raypose.trial_id"
TRIAL_STATUS_TAG = "raypose.trial_status"
# How a trial ended (Tune's view) -> the MLflow run status it gets. A trial ASHA stopped early did
# what it was asked: FINISHED (its tag says stopped_early); KILLED is kept for interrupts, so that
# red in the runs table means something went wrong.
TRIAL_RUN_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "errored": "FAILED"}
# Where the MLflow 3 UI opens the runs table whatever the browser last showed (the experiment
# kind tag alone is overridden by a browser-wide setting, which may open the GenAI overview).
RUNS_TABLE_QUERY = "workflowType=machine_learning"


def resolve_tracking_uri(configured: str | None = None, base_dir: str | os.PathLike | None = None) -> str:
    """The tracking URI in force, fixed so that it means the same in every working folder.

    ``configured``, else ``$MLFLOW_TRACKING_URI``, else MLflow's default; a relative sqlite file
    or local folder is made absolute against ``base_dir`` (default: the current folder).
    """
    import mlflow

    uri = configured or mlflow.get_tracking_uri()
    base = Path(base_dir or os.getcwd())
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{base / uri[len('sqlite:///'):]}"
    if "://" not in uri and not uri.startswith("file:"):
        return (base / uri).resolve().as_uri()
    return uri


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """Check, before any work, that an http(s) tracking server answers; file and sqlite stores are
    local and not probed.

    One GET of the server's ``/health`` with a ``timeout_s`` limit: MLflow's own client retries a
    refused connection with backoff for minutes before it gives up. Any HTTP answer (even 401 or
    404 from a proxy in front of the server) counts as reachable; MLflow's calls report those.

    Raises:
        ConfigError: nothing answers at ``uri`` within ``timeout_s``; the message names the address.
    """
    import ssl
    import urllib.error
    import urllib.request

    from raypose.errors import ConfigError

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError as e:
        log.debug("MLflow tracking server %s answered /health with HTTP %s", uri, e.code)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, ssl.SSLError):  # it answered; its certificate is MLflow's to judge
            log.debug("MLflow tracking server %s: TLS handshake failed here (%s)", uri, reason)
            return
        raise ConfigError(
            f"MLflow tracking server {uri} does not answer ({reason}; waited up to {timeout_s:g} s): start it with "
            f"`mlflow server --host HOST --port PORT`, or unset MLFLOW_TRACKING_URI / set mlflow.tracking_uri to a "
            "file store (e.g. sqlite:///mlflow.db)"
        ) from None


def local_store_path(uri: str) -> Path | None:
    """The file (``sqlite:///``) or folder (``file:``) of a local MLflow store; None for a server
    (``http(s)://``, ``databricks``, a database server), which is not on this disk."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])  # sqlite:////abs/x.db -> /abs/x.db; sqlite:///x.db -> x.db
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return None


def check_local_store(uri: str) -> None:
    """Refuse a local MLflow store that cannot be written, before anything opens it: a sqlite file
    (and its folder, where sqlite keeps its journal) or a file store's folder on a read-only, full
    or forbidden disk. Server URIs are left alone.

    Raises:
        ConfigError: naming the store, the reason in words and the fix.
    """
    from raypose.errors import ConfigError
    from raypose.io import probe_writable, write_errno_meaning

    path = local_store_path(uri)
    if path is None:
        return
    if uri.startswith("file:") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise ConfigError(  # MLflow 3 refuses its file store unless asked (a traceback, after the model is built)
            f"mlflow.tracking_uri {uri}: MLflow keeps its file store in maintenance mode and refuses it; use "
            f"sqlite:///{path}.db (`mlflow migrate-filestore` moves old runs), or set MLFLOW_ALLOW_FILE_STORE=true"
        )
    path = path.absolute()
    folder = path.parent if uri.startswith("sqlite:") else path
    while not folder.exists():
        folder = folder.parent
    error = probe_writable(folder)
    if error is None and path.is_file():
        try:
            os.close(os.open(path, os.O_RDWR))  # a read-only db file in a writable folder
        except OSError as e:
            error = e
    meaning = write_errno_meaning(error) if error is not None else None
    if meaning is not None:
        raise ConfigError(
            f"mlflow.tracking_uri {uri}: {meaning}; set mlflow.tracking_uri (or $MLFLOW_TRACKING_URI) to a "
            "store in a writable folder, or log to a tracking server (`mlflow server --backend-store-uri ...`)"
        )


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (as a model-training experiment) when missing.

    Trials on several nodes may race to create it: the loser finds the winner's.
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


class MlflowRun:
    """A handle on one MLflow run: start or resume, log, end.

    Args:
        experiment: experiment name (created when missing).
        uri: tracking URI, as :func:`resolve_tracking_uri` gives it.
        run_id: log into this existing run (resumed training, or a trial run made by
            :func:`find_or_create_child_run`) instead of starting one.
        run_name, tags, parent_run_id: for a new run; ``parent_run_id`` sets ``mlflow.parentRunId``
            so the run shows nested under its parent (one child per Tune trial).
        best_effort: for training: a call the tracking server does not answer (it is down or
            restarting) is queued instead of raised, and sent, in order, with the next call that
            gets through; :meth:`end` waits up to ``flush_timeout_s`` for the server. An outage
            then costs the run nothing; its points reach MLflow when the server is back (and a
            resumed run backfills what a crash kept from it, :meth:`backfill`). A new run
            (``run_id`` None) must still be created now.
    """

    def __init__(
        self,
        experiment: str,
        uri: str,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        best_effort: bool = False,
        flush_timeout_s: float = 300.0,
    ):
        self.uri = uri
        check_local_store(uri)
        self.client = MlflowClient(uri)
        self.run_id = run_id
        self.best_effort = best_effort
        self.flush_timeout_s = flush_timeout_s
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._system_metrics = None
        self._system_metrics_started = False
        if run_id is None:
            exp_id = get_or_create_experiment(self.client, experiment)
            all_tags = {**(tags or {})}
            if parent_run_id:
                all_tags[PARENT_TAG] = parent_run_id
            self.run_id = self.client.create_run(exp_id, tags=all_tags, run_name=run_name).info.run_id
            log.info("MLflow run %s (%s) at %s", self.run_id, run_name or "", uri)
        else:
            self._call("resume the run", lambda: self.client.update_run(run_id, status="RUNNING"))
            self.set_tags(tags or {})
            log.info("resuming MLflow run %s at %s", run_id, uri)

    @property
    def pending(self) -> int:
        """Calls queued while the tracking server did not answer."""
        return len(self._pending)

    def _call(self, what: str, send: Callable[[], None]) -> None:
        if not self.best_effort:
            send()
            return
        self._pending.append((what, send))
        self._flush()

    def _flush(self) -> bool:
        """Send the queued calls in order; stop at the first that fails. True when none is left."""
        sent = 0
        while self._pending:
            what, send = self._pending[0]
            try:
                send()
            except Exception as e:  # the server is down, restarting or unreachable: keep the call
                if sent or len(self._pending) == 1:
                    log.warning("MLflow at %s did not answer (%s: %s); %d call(s) queued until it does (first: %s)",
                                self.uri, type(e).__name__, str(e)[:200], len(self._pending), what)
                return False
            self._pending.pop(0)
            sent += 1
        if sent > 1:
            log.info("MLflow at %s answers again: %d queued call(s) sent", self.uri, sent)
        return True

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params once; params already logged (a resumed run) are skipped, not re-set."""

        def send() -> None:
            existing = self.client.get_run(self.run_id).data.params
            new = [Param(k, param_value(v)) for k, v in params.items() if k not in existing]
            for start in range(0, len(new), 100):  # MLflow caps a batch at 100 params
                self.client.log_batch(self.run_id, params=new[start : start + 100])

        self._call("log params", send)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)  # when measured, not when a queued call is sent
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if _is_number(v)]

        def send() -> None:
            for start in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

        self._call(f"metrics of step {step}", send)

    def logged_steps(self, key: str) -> set[int]:
        """The steps of ``key`` the run holds (empty when the server does not answer)."""
        try:
            return {m.step for m in self.client.get_metric_history(self.run_id, key)}
        except Exception as e:
            log.warning("MLflow at %s did not answer (%s): the steps run %s holds are unknown",
                        self.uri, type(e).__name__, self.run_id)
            return set()

    def backfill(self, history: list[Mapping[str, Any]], key: str = "train_loss", skip: tuple[str, ...] = ()) -> int:
        """Log the epochs of ``history`` (per-epoch metrics with ``epoch``) that the run lacks:
        those a crash or an outage kept from it. Returns how many; 0 when the server does not answer."""
        try:
            logged = {m.step for m in self.client.get_metric_history(self.run_id, key)}
        except Exception as e:
            log.warning("MLflow at %s did not answer (%s): epochs missing from run %s are not backfilled",
                        self.uri, type(e).__name__, self.run_id)
            return 0
        missing = [m for m in history if int(m["epoch"]) not in logged]
        for m in missing:
            self.log_metrics({k: v for k, v in m.items() if k not in ("epoch", *skip)}, step=int(m["epoch"]))
        if missing:
            log.info("MLflow run %s: backfilled epoch(s) %s", self.run_id, [int(m["epoch"]) for m in missing])
        return len(missing)

    def metrics(self) -> dict[str, float]:
        """The run's latest value of each metric logged so far."""
        return dict(self.client.get_run(self.run_id).data.metrics)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self._call(f"tag {k}", lambda k=k, v=v: self.client.set_tag(self.run_id, k, str(v)))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a file or a folder's files. Best effort: a folder that may be temporary is
        copied first, so a queued call still finds it."""
        path = Path(path)
        if not path.exists():
            return
        copy = None
        if self.best_effort:
            copy = Path(tempfile.mkdtemp(prefix="raypose-mlflow-queue-"))
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy / path.name)
            path = copy / path.name

        def send() -> None:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)
            if copy is not None:
                shutil.rmtree(copy, ignore_errors=True)

        self._call(f"artifact {path.name}", send)

    def log_inputs(self, datasets: list) -> None:
        """Log MLflow dataset inputs (:func:`dataset_input`); one already on the run is not repeated."""

        def send() -> None:
            run = self.client.get_run(self.run_id)
            held = {(d.dataset.name, d.dataset.digest) for d in (run.inputs.dataset_inputs if run.inputs else [])}
            new = [d for d in datasets if (d.dataset.name, d.dataset.digest) not in held]
            if new:
                self.client.log_inputs(self.run_id, datasets=new)

        self._call("log datasets", send)

    @property
    def system_metrics_started(self) -> bool:
        """Whether :meth:`start_system_metrics` was called (whether or not the monitor could start)."""
        return self._system_metrics_started

    def start_system_metrics(self, interval_s: float = 10.0, node_id: str | None = None) -> None:
        """Log CPU, memory, disk, network (and GPU, with ``nvidia-ml-py``) use as ``system/*``
        metrics every ``interval_s`` seconds until :meth:`end` (MLflow's own monitor, on a thread).
        A resumed run goes on from its last step. The monitor stops by itself if the server does
        not answer; losing system metrics must not cost a run anything."""
        self._system_metrics_started = True
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system_metrics = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s, resume_logging=True,
                                                        node_id=node_id, tracking_uri=self.uri)
            self._system_metrics.start()
        except Exception as e:
            log.warning("system metrics are not logged to run %s (%s: %s)", self.run_id, type(e).__name__, e)
            self._system_metrics = None

    def end(self, status: str = "FINISHED") -> None:
        """End the run as FINISHED, FAILED or KILLED (best effort: after what is queued, waiting
        up to ``flush_timeout_s`` for the server; if it stays down the run is left as it is,
        and the queued calls are reported as lost)."""
        if self._system_metrics is not None:
            self._system_metrics.finish()
            self._system_metrics = None
        self._call(f"end the run ({status})", lambda: self.client.set_terminated(self.run_id, status=status))
        deadline = time.monotonic() + self.flush_timeout_s
        while self._pending and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            self._flush()
        if self._pending:
            log.error("MLflow at %s did not answer for %.0f s: %d call(s) to run %s are lost (%s); a resumed run "
                      "backfills its epochs", self.uri, self.flush_timeout_s, len(self._pending), self.run_id,
                      ", ".join(what for what, _ in self._pending[:5]))
            self._pending.clear()


def runs_table_url(uri: str, experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The URL that opens an experiment's runs table: on the tracking server for an http(s)
    URI, else on ``ui`` (where ``mlflow ui --backend-store-uri URI`` serves by default)."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}?{RUNS_TABLE_QUERY}"


def experiment_id(experiment: str, uri: str) -> str:
    """The id of experiment ``experiment`` (created when missing).

    Raises:
        ConfigError: a local store that cannot be written (:func:`check_local_store`).
    """
    check_local_store(uri)
    return get_or_create_experiment(MlflowClient(uri), experiment)


def source_tags() -> dict[str, str]:
    """MLflow's own source tags for a run started here (``mlflow.source.name``, ``.type``,
    ``.git.commit`` when the program runs from a git checkout, ``mlflow.user``), which
    ``MlflowClient.create_run`` does not set by itself. The study passes its own to the trials,
    whose processes are Ray workers."""
    from mlflow.tracking.context.registry import resolve_tags

    try:
        tags = resolve_tags()
    except Exception as e:  # a context provider failing must not stop a run
        log.warning("MLflow's source tags could not be resolved (%s)", e)
        return {}
    return {k: str(v) for k, v in tags.items() if k.startswith(("mlflow.source.", "mlflow.user"))}


def file_digest(path: str | os.PathLike, chars: int = 16) -> str:
    """The first ``chars`` hex digits of a file's sha256 (a dataset's digest in MLflow)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:chars]


def dataset_input(name: str, source: str, digest: str, context: str):
    """An MLflow dataset input (``client.log_inputs``): ``name`` at ``source`` (a path or URI),
    identified by ``digest``; ``context`` is MLflow's ``mlflow.data.context`` (train, validation)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": local paths all are
        warnings.simplefilter("ignore", UserWarning)
        dataset_source = resolve_dataset_source(source)
    dataset = MetaDataset(dataset_source, name=name, digest=digest)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


def param_value(value: Any) -> str:
    """A param as MLflow stores it: text, at most :data:`MAX_PARAM_CHARS` characters."""
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def create_run(experiment: str, uri: str, run_name: str, tags: Mapping[str, str] | None = None) -> str:
    """A new run (not started in this process: whoever trains logs into it by id)."""
    check_local_store(uri)
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, experiment)
    return client.create_run(exp_id, tags=dict(tags or {}), run_name=run_name).info.run_id


def find_or_create_child_run(
    experiment: str, parent_run_id: str, trial_id: str, run_name: str, uri: str,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The MLflow run of a Tune trial under its parent, created once.

    A retried or resumed trial finds its run by the ``raypose.trial_id`` tag instead of making
    a duplicate.
    """
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, experiment)
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    # the study's source (program, commit, user): a trial's own process is a Ray worker
    inherited = {k: v for k, v in client.get_run(parent_run_id).data.tags.items()
                 if k.startswith(("mlflow.source.", "mlflow.user"))}
    all_tags = {**inherited, PARENT_TAG: parent_run_id, TRIAL_ID_TAG: trial_id, **(tags or {})}
    return client.create_run(exp_id, tags=all_tags, run_name=run_name).info.run_id


def end_trial_run(experiment: str, parent_run_id: str, trial_id: str, status: str, uri: str,
                  reason: str | None = None) -> None:
    """Tag a trial's run with how it ended (:data:`TRIAL_RUN_STATUS`) and end it accordingly."""
    run_id = find_or_create_child_run(experiment, parent_run_id, trial_id, f"trial-{trial_id}", uri)
    client = MlflowClient(uri)
    client.set_tag(run_id, TRIAL_STATUS_TAG, status)
    if reason:
        client.set_tag(run_id, "raypose.failure_reason", param_value(reason))
    client.set_terminated(run_id, status=TRIAL_RUN_STATUS[status])


def end_running_children(experiment: str, parent_run_id: str, uri: str, status: str = "KILLED") -> int:
    """End the child runs of a parent that are still RUNNING (an interrupted study); returns how many."""
    client = MlflowClient(uri)
    running = [r for r in child_runs(experiment, parent_run_id, uri) if r.info.status == "RUNNING"]
    for run in running:
        client.set_terminated(run.info.run_id, status=status)
    return len(running)


def child_runs(experiment: str, parent_run_id: str, uri: str) -> list:
    """All child runs of a parent run (MLflow ``Run`` objects)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")


MODEL_ARTIFACT = "model"  # where the study's best model is logged on the parent run
CHECKPOINT_IN_MODEL = "checkpoint.pth"  # the raypose checkpoint inside the logged model's extra files
MAX_EXAMPLE_SIDE = 256  # the input example is one validation image, scaled down to this long side


def save_pose_model(checkpoint: str | os.PathLike, example_image: str | os.PathLike, folder: Path) -> Path:
    """An MLflow PyTorch model in ``folder`` from a raypose checkpoint: the KeypointRCNN module
    (``mlflow.pytorch.load_model`` gives it back, in eval mode), a signature, one image as the input
    example, and the checkpoint itself as an extra file, from which ``raypose predict models:/...``
    rebuilds the model exactly as from the file (:func:`resolve_checkpoint`).

    The signature's input is one float32 image tensor ``(3, H, W)`` in [0, 1] (a list of them
    for a batch, as torchvision's detection models take); the output is a list of dicts (boxes,
    scores, keypoints, keypoints_scores), which MLflow's schema cannot describe, so it is left out.
    """
    import mlflow.pytorch
    import numpy as np
    import torch
    import torchvision
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from raypose.checkpoint import load_model_from_checkpoint
    from raypose.images import read_rgb

    model, _ = load_model_from_checkpoint(checkpoint, "cpu")
    with read_rgb(example_image) as im:
        im.thumbnail((MAX_EXAMPLE_SIDE, MAX_EXAMPLE_SIDE))
        example = (np.asarray(im, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]  # (1, 3, H, W)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1), name="images")]))
    mlflow.pytorch.save_model(
        model, str(folder), signature=signature, input_example=example, extra_files=[str(checkpoint)],
        serialization_format="pickle",  # torch.export cannot trace detection post-processing (data-dependent NMS)
        # as resolved here; inferring them would load the model once more in a subprocess
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          f"torchvision=={torchvision.__version__.split('+')[0]}"],
    )
    return folder


def register_pose_model(uri: str, run_id: str, model_dir: Path, name: str, tags: Mapping[str, Any],
                        description: str = "") -> str:
    """Log ``model_dir`` (:func:`save_pose_model`) on run ``run_id`` as :data:`MODEL_ARTIFACT` and
    register it as a new version of model ``name`` (created when missing), tagged with ``tags``.
    Returns the version."""
    client = MlflowClient(uri, registry_uri=uri)
    client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT)
    try:
        client.create_registered_model(name, description=description or None)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id,
                                          tags={k: str(v) for k, v in tags.items()}, description=description or None)
    log.info("registered model %s version %s (run %s)", name, version.version, run_id)
    return str(version.version)


def resolve_checkpoint(ref: str | os.PathLike, tracking_uri: str | None = None, cache: Path | None = None) -> Path:
    """A checkpoint file from a path, or from a registered model: ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS`` or ``models:/NAME/latest`` (downloaded from the registry at
    ``tracking_uri``, default ``$MLFLOW_TRACKING_URI``, into ``cache`` or a temporary folder).

    Raises:
        WeightsError: the model or version does not exist, or it holds no raypose checkpoint.
    """
    from raypose.errors import WeightsError

    text = str(ref)
    if not text.startswith("models:/"):
        return Path(ref)
    import mlflow.artifacts

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_server(uri)
    dest = cache or Path(tempfile.mkdtemp(prefix="raypose-model-"))
    client = MlflowClient(uri, registry_uri=uri)
    try:
        version = _model_version(client, text)
        # the registry's own download URI: models:/ in download_artifacts would use the global registry
        source = client.get_model_version_download_uri(version.name, version.version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=uri))
    except MlflowException as e:
        raise WeightsError(f"{text}: not found in the model registry at {uri} ({e.message[:300]}); the MLflow "
                           "UI's Models page lists the registered models and versions; check MLFLOW_TRACKING_URI "
                           "or pass --tracking-uri") from None
    found = sorted(local.rglob(CHECKPOINT_IN_MODEL))
    if not found:
        raise WeightsError(f"{text} (downloaded to {local}) holds no {CHECKPOINT_IN_MODEL}: it was not registered "
                           "by raypose; load it with mlflow.pytorch.load_model instead")
    return found[0]


def _model_version(client: MlflowClient, model_uri: str):
    """The registered version ``models:/NAME/VERSION``, ``models:/NAME/latest`` or
    ``models:/NAME@ALIAS`` names (raises MlflowException when there is none)."""
    rest = model_uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, version = rest.rpartition("/")
    if not name:
        raise MlflowException(f"{model_uri}: expected models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS")
    if version == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            raise MlflowException(f"Registered Model with name={name} has no versions")
        return max(versions, key=lambda v: int(v.version))
    return client.get_model_version(name, version)
