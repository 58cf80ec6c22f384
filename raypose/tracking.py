"""The one module that talks to MLflow.

Training logs from rank 0 only. A run's MLflow id is stored in its checkpoints, so a resumed
run keeps logging into the same MLflow run instead of starting a duplicate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow limits a param value to 6000 characters (older servers: 500); long lists are truncated.
_MAX_PARAM_CHARS = 500


def tracking_uri(configured: str | None = None) -> str:
    """The tracking URI in force: the config's, else ``$MLFLOW_TRACKING_URI``, else MLflow's default."""
    import mlflow

    if configured:
        mlflow.set_tracking_uri(configured)
    return mlflow.get_tracking_uri()


class MlflowRun:
    """A thin handle on one MLflow run: start or resume, log, end.

    Args:
        experiment: experiment name (created when missing).
        uri: tracking URI; ``None`` keeps ``$MLFLOW_TRACKING_URI`` / MLflow's default.
        run_id: log into this existing run (resumed training, or a trial run made by
            :func:`find_or_create_child_run`) instead of starting one.
        run_name, tags, parent_run_id: for a new run; ``parent_run_id`` sets ``mlflow.parentRunId``
            so the run shows nested under its parent (one child per Tune trial).
    """

    def __init__(
        self,
        experiment: str,
        uri: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(uri)
        self.client = MlflowClient(self.uri)
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
            all_tags = {**(tags or {})}
            if parent_run_id:
                all_tags["mlflow.parentRunId"] = parent_run_id
            if run_name:
                all_tags["mlflow.runName"] = run_name
            run = self.client.create_run(exp_id, tags=all_tags, run_name=run_name)
            run_id = run.info.run_id
            log.info("MLflow run %s (%s) at %s", run_id, run_name or "", self.uri)
        else:
            self.client.update_run(run_id, status="RUNNING")
            log.info("resuming MLflow run %s at %s", run_id, self.uri)
        self.run_id = run_id
        self._mlflow = mlflow

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params once; params already logged (a resumed run) are skipped, not re-set."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [
            Param(k, _param_value(v)) for k, v in params.items() if k not in existing
        ]
        for start in range(0, len(new), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=new[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if _is_number(v)]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def find_or_create_child_run(
    experiment: str, parent_run_id: str, trial_id: str, run_name: str, uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The MLflow run of a Tune trial under its parent, created once.

    A retried or resumed trial finds its run by the ``raypose.trial_id`` tag instead of making
    a duplicate.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`raypose.trial_id` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    all_tags = {"mlflow.parentRunId": parent_run_id, "raypose.trial_id": trial_id, "mlflow.runName": run_name}
    all_tags.update(tags or {})
    return client.create_run(exp_id, tags=all_tags, run_name=run_name).info.run_id


def child_runs(experiment: str, parent_run_id: str, uri: str | None = None) -> list:
    """All child runs of a parent run (MLflow ``Run`` objects)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
