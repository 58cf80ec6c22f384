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
# How a trial ended (Tune's view) -> the MLflow run status it gets.
TRIAL_RUN_STATUS = {"completed": "FINISHED", "stopped_early": "KILLED", "errored": "FAILED"}


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
        self.client = MlflowClient(uri)
        self.run_id = run_id
        self.best_effort = best_effort
        self.flush_timeout_s = flush_timeout_s
        self._pending: list[tuple[str, Callable[[], None]]] = []
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

    def end(self, status: str = "FINISHED") -> None:
        """End the run as FINISHED, FAILED or KILLED (best effort: after what is queued, waiting
        up to ``flush_timeout_s`` for the server; if it stays down the run is left as it is,
        and the queued calls are reported as lost)."""
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


def param_value(value: Any) -> str:
    """A param as MLflow stores it: text, at most :data:`MAX_PARAM_CHARS` characters."""
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def create_run(experiment: str, uri: str, run_name: str, tags: Mapping[str, str] | None = None) -> str:
    """A new run (not started in this process: whoever trains logs into it by id)."""
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
    all_tags = {PARENT_TAG: parent_run_id, TRIAL_ID_TAG: trial_id, **(tags or {})}
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
