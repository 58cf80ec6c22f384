"""Shared fixtures: a tiny synthetic data set built once per test session.

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
