"""``raypose tune`` (a hyperparameter search on Ray Tune) and ``raypose submit`` (the same as a Ray job)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tune`` and ``submit`` to the ``raypose`` parser."""
    p = subparsers.add_parser(
        "tune",
        help="search training recipes: Ray Tune + Optuna (TPE) + ASHA over Ray Train trials",
        description="Run the search a space file describes, one MLflow child run per trial under one parent "
        "run, then evaluate the best checkpoint on the full validation set, run the error analysis, "
        "and write <storage>/<study>/best/. Honors RAY_ADDRESS (connects to that cluster).",
    )
    p.add_argument("space", help="search space YAML (see search_spaces/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base-config value (optim.lr=...) or a Tune setting (tune.num_samples=...)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name")
    p.set_defaults(func=_tune)

    p = subparsers.add_parser(
        "submit",
        help="submit `raypose tune SPACE` to a Ray cluster as a job and stream its logs",
        description="Submit the search as a Ray job (Jobs API) with this project folder as its working "
        "directory; streams the job's logs and exits 0 when the job succeeds.",
    )
    p.add_argument("space", help="search space YAML, relative to the project folder")
    p.add_argument("--address", default=os.environ.get("RAY_JOBS_ADDRESS", "http://127.0.0.1:8265"),
                   help="Ray dashboard address, e.g. http://HEAD:8265 (default $RAY_JOBS_ADDRESS or local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed on to `raypose tune --set`")
    p.add_argument("--resume", action="store_true", help="passed on to `raypose tune --resume`")
    p.add_argument("--working-dir", default=".", help="folder uploaded as the job's working directory (default .)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return without streaming logs")
    p.set_defaults(func=_submit)


def _tune(args) -> int:
    from raypose.cli.train import check_services
    from raypose.errors import Interrupted
    from raypose.tuning.space import load_search_space

    space = load_search_space(args.space, args.overrides)  # a bad space is refused before Ray is imported
    check_services(space.base, uses_ray=True)
    _check_writable_outputs(space)
    _check_study_folder(space)
    from raypose.tuning.study import run_study

    runs_table = _announce_mlflow(space)
    try:
        study = run_study(space, resume=args.resume)
    except Interrupted:  # the search's own, with how many trials are unfinished
        raise
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM or SIGHUP (raypose.cli.main) outside the search loop
        command = shlex.join(["raypose", "tune", args.space, *[a for o in args.overrides for a in ("--set", o)],
                              "--resume"])
        reason = f"{e}; " if str(e) else ""
        raise Interrupted(f"{reason}study {space.name!r} stopped; its state is saved in {space.tune_dir}. "
                          f"Resume it with: {command}") from e
    print(study.report)
    for note in study.notes:
        print(f"note: {note}")
    print(f"best checkpoint, config, metrics and report: {study.best_dir}")
    if runs_table:
        print(f"trials in MLflow: {runs_table}")
    print(study.summary["sentence"])
    return 0


def _check_writable_outputs(space) -> None:
    """A read-only or full tune.storage_path or local MLflow store: refused before any work (ConfigError)."""
    from raypose.experiment_log import check_local_store
    from raypose.storage import check_writable

    check_writable(space.tune.storage_path, "tune.storage_path")
    if space.base.mlflow.enabled:
        check_local_store(space.base.mlflow.tracking_uri)


def _check_study_folder(space) -> None:
    """A space file where the study writes (``best/``, Tune's state and trial folders) is refused
    before any work (ConfigError); a study folder on S3/GCS holds no local input."""
    from raypose.io import check_output_dir
    from raypose.storage import is_uri
    from raypose.tuning.study import STUDY_FILES

    if not is_uri(space.study_dir):
        check_output_dir(space.study_dir, "the study folder (tune.storage_path/tune.name)", inputs=(space.source,),
                         writes=STUDY_FILES)


def _announce_mlflow(space) -> str | None:
    """Print where the study's runs are in MLflow: the URL that opens the runs table (MLflow 3
    may otherwise open its GenAI overview), and how to start the UI for a local store."""
    if not space.base.mlflow.enabled:
        return None
    from raypose.experiment_log import experiment_id, runs_table_url

    uri = space.base.mlflow.tracking_uri
    url = runs_table_url(uri, experiment_id(space.base.mlflow.experiment, uri))
    if uri.startswith(("http://", "https://")):
        print(f"MLflow tracking URI: {uri}; the study's runs table: {url}")
    else:
        print(f"MLflow tracking URI: {uri}; start the UI with `mlflow ui --backend-store-uri {uri}` "
              f"and open the study's runs table at {url}")
    return url


def _submit(args) -> int:
    from raypose.tuning.space import load_search_space
    from raypose.tuning.submit import submit_search

    # a space the job would refuse is refused here, before anything is uploaded or queued
    load_search_space(os.path.join(args.working_dir, args.space), args.overrides)
    command = ["python", "-m", "raypose", "tune", args.space]
    for override in args.overrides:
        command += ["--set", override]
    if args.resume:
        command.append("--resume")
    status = submit_search(args.address, shlex.join(command), args.working_dir, wait=not args.no_wait)
    return 0 if status in ("SUCCEEDED", "SUBMITTED") else 1
