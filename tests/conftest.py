"""Shared fixtures: a tiny synthetic data set built once per test session, and real services
started on loopback and stopped by handle (moto's S3 server, an MLflow tracking server).

``synth_data`` is used by many test modules (data, training, evaluation, analysis); keep its
name and attributes stable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@dataclass(frozen=True)
class SynthData:
    """A generated data set: source files plus the merged 23-keypoint files."""

    root: Path
    train_ann: Path  # merged 23-keypoint COCO JSON (train)
    val_ann: Path  # merged 23-keypoint COCO JSON (val)
    train_images: Path
    val_images: Path
    train_coco: Path  # the 17-keypoint COCO source files and CMU-style foot files
    val_coco: Path
    train_foot: Path
    val_foot: Path

    def __getitem__(self, key: str):  # dict-style access too: synth_data["train_ann"]
        return getattr(self, key)


SYNTH_TRAIN_IMAGES = 6
SYNTH_VAL_IMAGES = 4
SYNTH_SEED = 0
SYNTH_IMAGE_SIZE = (128, 192)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthData:
    """6 train + 4 val synthetic images (128-192 px sides), merged to 23 keypoints."""
    from raypose.data.synth import generate_synthetic_dataset, prepare_dataset

    root = tmp_path_factory.mktemp("synth")
    layout = generate_synthetic_dataset(
        root, SYNTH_TRAIN_IMAGES, SYNTH_VAL_IMAGES, seed=SYNTH_SEED, image_size=SYNTH_IMAGE_SIZE
    )
    merged = prepare_dataset(root)
    return SynthData(
        root=root,
        train_ann=merged["train"],
        val_ann=merged["val"],
        train_images=layout.images("train"),
        val_images=layout.images("val"),
        train_coco=layout.coco("train"),
        val_coco=layout.coco("val"),
        train_foot=layout.foot("train"),
        val_foot=layout.foot("val"),
    )


@pytest.fixture(scope="session")
def synth_root(synth_data: SynthData) -> Path:
    """The synthetic data set's root folder (``annotations/``, ``train2017/``, ``val2017/``)."""
    return synth_data.root


# A CPU-sized model: small heads, few sampled ROIs, small images. Trains at a few images/s on 2 cores.
TINY_MODEL = {
    "backbone": "resnet18",
    "weights": None,
    "backbone_weights": None,
    "norm": "batch",
    "keypoint_head_channels": [64, 64, 64, 64],
    "box_head_size": 256,
    "fpn_channels": 64,  # as configs/synthetic_tiny.yaml: a CPU step 3x faster than with 256
    "box_batch_size_per_image": 64,
    "rpn_post_nms_top_n_train": 300,
    "min_size": [128],
    "max_size": 160,
}


@pytest.fixture
def tiny_train_config(synth_data: SynthData, tmp_path: Path) -> dict:
    """A raw training config (a dict, as YAML would give) for the tiny model on ``synth_data``."""
    return {
        "name": "tiny",
        "storage_path": str(tmp_path / "runs"),
        "epochs": 1,
        "batch_size": 2,
        "workers": 0,
        "amp": False,
        "eval_batch_size": 4,
        "log_every": 1,
        "model": dict(TINY_MODEL),
        "data": {
            "root": str(synth_data.root),
            "kind": "synthetic",
            "synth": {"train": SYNTH_TRAIN_IMAGES, "val": SYNTH_VAL_IMAGES, "seed": SYNTH_SEED,
                      "image_size": list(SYNTH_IMAGE_SIZE)},
            "loader_workers": 0,
            "train_limit": 4,
            "val_limit": 4,
        },
        "optim": {"name": "adamw", "lr": 0.001},
        "schedule": {"name": "onecycle"},
        "mlflow": {"enabled": False},
    }


@pytest.fixture
def ray_local():
    """A local Ray instance shared by the tests that need one, with more logical CPUs than cores.

    A Tune trial and each of its Train workers hold a CPU slot: on a 2-core CI machine that is
    more slots than cores, so Ray is told it has 6. Started on first use and kept for the session
    (Ray shuts itself down at exit); a test that stops every Ray process leaves it to be restarted.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("RAY_ADDRESS", None)
    if not ray.is_initialized():
        # with the dashboard: its State API lets Train V2 free the resources of trials ASHA stops
        ray.init(num_cpus=6, include_dashboard=True, log_to_driver=False, configure_logging=False)
    return ray


# --- Real services on loopback, started and stopped by handle --------------------------------


_ports_given: set[int] = set()


def free_port() -> int:
    """A 127.0.0.1 port free now and never given before by this process: the kernel may hand a
    just-closed port out again, and one `ray start` given the same port twice fails to start."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def _wait_until(ready, what: str, proc, timeout_s: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


def _stop(proc) -> None:
    """End a server started with ``start_new_session=True`` and the processes it started (its
    own process group: `mlflow server` runs uvicorn as a child)."""
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class S3Server:
    """moto's S3 server on loopback; ``env`` is what a process (or a Ray node) needs to use it."""

    endpoint: str
    env: dict[str, str]

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server():
    """moto's server mode (``moto[server]``) as a subprocess on a free 127.0.0.1 port; pyarrow,
    Ray and boto3 reach it through ``AWS_ENDPOINT_URL``."""
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).status == 200
        except OSError:
            return False

    try:
        _wait_until(ready, "moto server", proc)
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
        yield S3Server(endpoint, env)
    finally:
        _stop(proc)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the moto server, with this process's AWS variables pointing at it."""
    import re

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    s3_server.client().create_bucket(Bucket=bucket)
    return bucket


class MlflowServer:
    """``mlflow server`` on a fixed 127.0.0.1 port (sqlite backend, artifacts proxied into a
    folder), stopped and started again by handle on the same port and store (an outage)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> None:
        import shutil
        import subprocess
        import sys
        import urllib.request

        mlflow_bin = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
        log = open(self.folder / "server.log", "a")
        self.proc = subprocess.Popen(
            [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

        def ready() -> bool:
            try:
                return urllib.request.urlopen(f"{self.uri}/health", timeout=2).status == 200
            except OSError:
                return False

        try:  # a loaded 2-core machine has taken over 120 s to start it
            _wait_until(ready, f"mlflow server (log: {self.folder / 'server.log'})", self.proc, timeout_s=300.0)
        except BaseException:
            self.stop()  # a server that never answered is not left running
            raise

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@pytest.fixture
def mlflow_server_handle(tmp_path_factory: pytest.TempPathFactory):
    """A :class:`MlflowServer`, started; stopped at the end whatever the test did to it."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(mlflow_server_handle: MlflowServer) -> str:
    """``mlflow server`` on a free 127.0.0.1 port (sqlite backend, artifacts proxied into a
    temporary folder); yields its http:// tracking URI."""
    return mlflow_server_handle.uri


@pytest.fixture(scope="session")
def loopback_cluster(s3_server):
    """A fixed two-node Ray cluster on loopback (`ray start`, a head and a worker node with 2 CPUs
    each and their own session folders), with the S3 server's variables in the nodes'
    environment, as a cluster's nodes would have. Shared by the cluster tests; stops its own
    nodes only (``tests.clusters.LoopbackCluster``)."""
    from tests.clusters import add_worker_node, node_env, start_head

    cluster = start_head(node_env(s3_server.env), cpus=2)
    try:
        add_worker_node(cluster, cpus=2)
        yield cluster
    finally:
        cluster.stop()
