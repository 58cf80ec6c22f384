"""`raypose submit` uploads the project as Ray would package it: every raypose module, and none of
the data, results or environments (Ray matches excludes as .gitignore does)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from raypose.tuning.submit import EXCLUDES

REPO = Path(__file__).resolve().parents[2]


def ray_package(project: Path, out: Path) -> set[str]:
    """The files Ray's job submission would upload from ``project`` (its own packaging code)."""
    from ray._private.runtime_env.packaging import create_package

    create_package(str(project), out, include_gitignore=True, excludes=EXCLUDES)
    with zipfile.ZipFile(out) as z:
        return {n for n in z.namelist() if not n.endswith("/")}


def test_every_raypose_module_is_uploaded_and_data_is_not(tmp_path):
    import shutil

    project = tmp_path / "project"
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == REPO and {"runs", "data", "mlruns", "mlflow.db", ".venv", "venv"}
        return {n for n in names if n in (".git", "__pycache__") or n.endswith(".egg-info") or (top and n in top)}

    shutil.copytree(REPO, project, ignore=ignore)
    # what a user's clone holds beside the code: data, results, an MLflow store, weights, a venv
    for junk in ("data/coco/annotations/x.json", "runs/study/best/checkpoint.pth", "mlruns/0/meta.yaml",
                 "mlflow.db", "weights/r50.pth", ".venv/bin/python"):
        (project / junk).parent.mkdir(parents=True, exist_ok=True)
        (project / junk).write_text("x")
    uploaded = ray_package(project, tmp_path / "pkg.zip")
    modules = {str(p.relative_to(REPO)) for p in (REPO / "raypose").rglob("*.py")}
    assert "raypose/data/prepare.py" in modules
    assert modules <= uploaded, sorted(modules - uploaded)
    assert {"search_spaces/quickstart.yaml", "configs/synthetic_tiny.yaml", "pyproject.toml"} <= uploaded
    assert not {n for n in uploaded if n.startswith(("data/", "runs/", "mlruns/", ".venv/")) or n.endswith(".pth")}
    assert "mlflow.db" not in uploaded


class FlakyJobClient:
    """A job client whose head answers as a busy one does: no agent, then (the earlier try
    having reached the agent after all) the submission id already exists."""

    def __init__(self, answers: list[str | None]):
        self.answers = answers
        self.ids: list[str] = []

    def submit_job(self, entrypoint: str, runtime_env: dict, submission_id: str) -> str:
        self.ids.append(submission_id)
        answer = self.answers.pop(0)
        if answer is not None:
            raise RuntimeError(f"Request failed with status code 500: {answer}")
        return submission_id


def test_a_busy_head_is_tried_again_with_the_same_submission_id(monkeypatch):
    import time

    from raypose.tuning.submit import _submit_when_ready

    monkeypatch.setattr(time, "sleep", lambda s: None)
    client = FlakyJobClient(["No available agent to submit job, please try again later.",
                             "Job with submission_id raypose_x already exists."])
    job_id = _submit_when_ready(client, "python -m raypose tune space.yaml", {})
    assert len(client.ids) == 2 and len(set(client.ids)) == 1 and job_id == client.ids[0]
    with pytest.raises(RuntimeError, match="invalid"):  # a real error is not tried again
        _submit_when_ready(FlakyJobClient(["runtime_env is invalid"]), "x", {})
