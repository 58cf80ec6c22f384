"""From a :class:`~raypose.training.config.DataConfig` to datasets and loaders.

Generates the synthetic data set when a config asks for it and it is missing, checks that the
files match the model's keypoint count, and builds the training loader (sharded per rank).
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from raypose.data.dataset import KeypointDataset, collate_fn
from raypose.data.transforms import build_train_transforms
from raypose.errors import ConfigError, InputError
from raypose.schema import KeypointSchema
from raypose.training.config import DataConfig

log = logging.getLogger(__name__)


def ensure_data(data: DataConfig) -> None:
    """Make sure the data the config names is there; generate the synthetic set when missing.

    Raises:
        InputError: COCO files are missing (the message says how to download and prepare them),
            or ``data.root`` holds a synthetic set generated with other ``data.synth`` settings.
    """
    needed = [data.path(data.train_ann), data.path(data.val_ann)]
    if all(p.is_file() for p in needed):
        if data.kind == "synthetic":
            check_synthetic_settings(data)
        return
    if data.kind == "synthetic":
        from raypose.data.synth import SynthStyle, generate_synthetic_dataset, prepare_dataset

        log.info("generating the synthetic data set in %s", data.root)
        style = SynthStyle(**data.synth.model_dump(exclude={"train", "val", "seed"}))
        generate_synthetic_dataset(data.root, data.synth.train, data.synth.val, seed=data.synth.seed, style=style)
        prepare_dataset(data.root)
        return
    missing = ", ".join(str(p) for p in needed if not p.is_file())
    raise InputError(
        f"data not found: {missing}. Download COCO 2017 (train2017, val2017, "
        "annotations_trainval2017) and the CMU foot annotations (person_keypoints_{train,val}2017_foot_v1.json) "
        f"into {data.root} as described in the README, then run `raypose data prepare --root {data.root}`"
    )


SYNTH_COUNTS = ("train", "val")  # fewer or more images: the same kind of data


def check_synthetic_settings(data: DataConfig) -> None:
    """Compare the settings ``data.root``'s synthetic set was generated with (its manifest) with
    ``data.synth``: other image counts are logged, other drawing settings (style, seed) refused.

    Raises:
        InputError: the set was drawn differently; the message names the settings and the fix.
    """
    from raypose.data.synth import MANIFEST, SYNTH_VERSION, read_manifest

    found = read_manifest(data.root)
    wanted = data.synth.model_dump(mode="json")
    if found is None:
        log.warning("%s has no %s: the settings of this synthetic set are unknown (made by an older raypose?); "
                    "remove the folder to generate it as data.synth says", data.root, MANIFEST)
        return
    if found.get("version", 1) != SYNTH_VERSION:
        raise InputError(
            f"{data.root} holds a synthetic data set drawn by another raypose (generator version "
            f"{found.get('version', 1)}, this one draws version {SYNTH_VERSION}): remove that folder to "
            "generate it anew, or set data.root to another folder"
        )
    changed = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
    drawn = {k: pair for k, pair in changed.items() if k not in SYNTH_COUNTS}
    if drawn:
        what = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in drawn.items())
        raise InputError(
            f"{data.root} holds a synthetic data set drawn with other settings than data.synth ({what}): "
            "remove that folder to generate it anew, or set data.root to another folder"
        )
    if changed:
        log.info("%s: synthetic set generated with %s", data.root,
                 ", ".join(f"{k}={old} (data.synth says {new})" for k, (old, new) in changed.items()))


def require_data(data: DataConfig, node: str) -> None:
    """Check, on a training worker, that this node has the data the config names.

    Jobs upload code, not data: every node reads ``data.root`` from its own disk or mount.

    Raises:
        InputError: a file or folder is missing here; the message names the node and the paths.
    """
    needed = [data.path(data.train_ann), data.path(data.val_ann), data.path(data.train_images),
              data.path(data.val_images)]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise InputError(
            f"data not found on node {node}: {', '.join(missing)} (data.root is {data.root}). Every node "
            "reads the data from that path: mount or copy it there on each node (the cluster configs mount "
            "/data), or --set data.root=PATH where the nodes have it"
        )


def build_datasets(data: DataConfig, schema: KeypointSchema) -> tuple[Dataset, Dataset]:
    """The training and validation datasets the config names (``Subset`` when limited).

    Raises:
        ConfigError: the files hold another keypoint count than the model's schema.
    """
    transforms = build_train_transforms(schema, data.hflip_prob, data.scale_range, data.photometric)
    train = KeypointDataset(data.path(data.train_ann), data.path(data.train_images), train=True, transforms=transforms)
    val = KeypointDataset(data.path(data.val_ann), data.path(data.val_images), train=False)
    for name, ds in (("train_ann", train), ("val_ann", val)):
        if ds.num_keypoints != schema.num_keypoints:
            raise ConfigError(
                f"data.{name} ({ds.annotations.source}) has {ds.num_keypoints} keypoints but "
                f"model.num_keypoints is {schema.num_keypoints}: set model.num_keypoints={ds.num_keypoints} "
                "or point data at the merged 23-keypoint files (`raypose data prepare`)"
            )
    train_limited = Subset(train, range(min(data.train_limit, len(train)))) if data.train_limit else train
    val_limited = Subset(val, range(min(data.val_limit, len(val)))) if data.val_limit else val
    return train_limited, val_limited


def image_ids(ds: Dataset) -> list[int]:
    """The COCO image ids of a :class:`KeypointDataset` or a ``Subset`` of one, in order."""
    if isinstance(ds, Subset):
        return [ds.dataset.image_id(i) for i in ds.indices]
    return [ds.image_id(i) for i in range(len(ds))]


def annotation_source(ds: Dataset) -> str:
    """The annotation file a (possibly limited) dataset was read from."""
    base = ds.dataset if isinstance(ds, Subset) else ds
    return base.annotations.source


def make_train_loader(
    train: Dataset, data: DataConfig, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Shuffled training batches, this rank's shard; :func:`set_loader_epoch` reseeds each epoch."""
    if world_size > 1:
        sampler = DistributedSampler(train, world_size, rank, shuffle=True, seed=seed)
    else:
        sampler = RandomSampler(train, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        train,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=data.loader_workers,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def set_loader_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Give the loader's sampler this epoch's order (the same after a resume)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    elif isinstance(loader.sampler, RandomSampler):
        loader.sampler.generator.manual_seed(seed + epoch)
