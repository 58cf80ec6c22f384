"""``raypose submit``: run a command on a Ray cluster through the Jobs API and follow it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from raypose.errors import RayposeError

log = logging.getLogger(__name__)

# Never uploaded with the working directory: results, data, weights, environments. Ray matches
# these as .gitignore does: a leading "/" anchors a folder to the working directory's root, so
# "/data/" leaves out ./data but keeps raypose/data/.
EXCLUDES = ["/runs/", "/data/", "/mlruns/", "/mlflow.db", ".git/", "*.pth", "/.venv/", "/venv/", "__pycache__/",
            "*.egg-info/"]


def submit_search(address: str, entrypoint: str, working_dir: str, wait: bool = True) -> str:
    """Submit ``entrypoint`` as a Ray job with ``working_dir`` uploaded; return its final status.

    ``MLFLOW_TRACKING_URI`` is passed on to the job when set here.

    Raises:
        RayposeError: the cluster cannot be reached at ``address``.
    """
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as e:
        raise RayposeError(f"cannot reach the Ray cluster at {address} ({e}); is `ray start --head` running there?") from None
    env = {k: os.environ[k] for k in ("MLFLOW_TRACKING_URI", "RAYPOSE_OFFLINE") if k in os.environ}
    runtime_env = {"working_dir": working_dir, "excludes": EXCLUDES, "env_vars": env}
    job_id = _submit_when_ready(client, entrypoint, runtime_env)
    print(f"submitted job {job_id} to {address}: {entrypoint}")
    if not wait:
        return "SUBMITTED"
    asyncio.run(_stream(client, job_id))
    status = _wait_for_end(client, job_id)
    print(f"job {job_id}: {status}")
    return status


def _submit_when_ready(client, entrypoint: str, runtime_env: dict, timeout_s: float = 180.0) -> str:
    """Submit the job; while the head's job agent is still starting or busy ("No available agent
    to submit job"), try again for up to ``timeout_s``. Every try carries the same submission
    id, so a try that reached the agent after all is found rather than started twice."""
    import time
    import uuid

    submission_id = f"raypose_{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id)
        except RuntimeError as e:
            if "already exists" in str(e):
                return submission_id
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            log.info("the cluster's job agent is not ready yet; trying again")
            time.sleep(3.0)


async def _stream(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        sys.stdout.write(lines)
        sys.stdout.flush()


def _wait_for_end(client, job_id: str, timeout_s: float = 60.0) -> str:
    """The job's terminal status (the log stream can end a moment before the status does)."""
    import time

    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout_s
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(1.0)
        status = client.get_job_status(job_id)
    return str(status.value) if isinstance(status, JobStatus) else str(status)
