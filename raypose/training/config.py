"""The training run's configuration: YAML in, a validated :class:`TrainConfig` out.

Config enters once: :func:`load_train_config` reads the YAML, applies ``--set key=value``
overrides and validates; everything downstream takes the typed object. Unknown keys and bad
values raise :class:`~raypose.errors.ConfigError` naming the file, the dotted key and the valid
choices, before Ray starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raypose.errors import ConfigError, InputError
from raypose.inference_options import InferenceOptions
from raypose.model import ModelConfig
from raypose.yaml_io import describe_type, load_yaml_mapping, parse_yaml


class _Strict(BaseModel):
    # frozen: a config is validated once and then only read (copies via model_copy(update=...));
    # no inf or nan: a non-finite lr or CPU count passes every bound and fails hours later
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, frozen=True, allow_inf_nan=False)


def expand_home(value: str | None) -> str | None:
    """A local path with ``~`` (or ``~user``) expanded, as a shell would; URIs (``s3://...``) unchanged."""
    if value is None or "://" in value:
        return value
    return os.path.expanduser(value)


def check_plain_name(value: str, key: str, parent: str) -> str:
    """``value`` if it is one plain folder name, to be put under the folder setting ``parent``.

    Raises:
        ValueError: a separator, ``..``, a leading dot or an empty name (for pydantic to report).
    """
    if not value.strip() or value.startswith(".") or any(c in value for c in "/\\\0"):
        raise ValueError(
            f"{key} {value!r} must be a plain folder name (no '/', '\\', '..', leading '.' or empty name); "
            f"it is made under {parent}: set {parent} to change where"
        )
    return value


class SynthConfig(_Strict):
    """Generate the synthetic data set at ``data.root`` when it is missing; the style fields say
    how hard its images are (``raypose.data.synth.SynthStyle``; the defaults are the standard set)."""

    train: int = Field(default=64, gt=0, description="synthetic training images")
    val: int = Field(default=16, gt=0, description="synthetic validation images")
    seed: int = 0
    image_size: tuple[int, int] = Field(default=(160, 256), description="(min, max) image side in pixels")
    max_people: int = Field(default=4, ge=1, le=4, description="most figures per image")
    empty_fraction: float = Field(default=0.08, ge=0, le=1, description="share of images without a figure")
    person_height: tuple[float, float] = Field(
        default=(0.4, 0.95), description="(min, max) figure height as a fraction of the image height"
    )
    small_fraction: float = Field(default=0.15, ge=0, le=1, description="share of figures drawn small (far away)")
    clutter: float = Field(default=1.0, ge=0, le=1, description="background shapes, occluders and crowds (0-1)")


class DataConfig(_Strict):
    """Where the merged 23-keypoint (or 17) COCO files and their images are.

    Paths are relative to ``root`` unless absolute. The defaults follow the COCO 2017 layout
    after ``raypose data prepare`` (``annotations/person_keypoints_{split}2017_foot23.json``).
    """

    root: str = "data/coco"
    kind: Literal["coco", "synthetic"] = "coco"
    train_ann: str = "annotations/person_keypoints_train2017_foot23.json"
    train_images: str = "train2017"
    val_ann: str = "annotations/person_keypoints_val2017_foot23.json"
    val_images: str = "val2017"
    synth: SynthConfig = Field(default_factory=SynthConfig)
    train_limit: int | None = Field(default=None, gt=0, description="use only the first N training images")
    val_limit: int | None = Field(
        default=None, gt=0, description="evaluate on the first N validation images; a search's final stage "
        "reports on the ones past N, which no trial was scored on (unless test_ann is set)",
    )
    test_ann: str | None = Field(
        default=None, description="a held-out annotation file the search's final stage reports on (never used "
        "to choose anything); default: the validation images past val_limit",
    )
    test_images: str | None = Field(default=None, description="the images of test_ann (default: val_images)")
    loader_workers: int = Field(default=2, ge=0, description="DataLoader worker processes per training worker")
    hflip_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    scale_range: tuple[float, float] = Field(
        default=(0.75, 1.25), description="[low, high] zoom factors of the scale jitter, 0 < low <= high; [1, 1]: off"
    )
    photometric: bool = True

    @field_validator("root", "train_ann", "train_images", "val_ann", "val_images", "test_ann", "test_images")
    @classmethod
    def _home(cls, value: str | None) -> str | None:
        return expand_home(value)

    @field_validator("scale_range")
    @classmethod
    def _zoom_factors(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"must be [low, high] zoom factors with 0 < low <= high, got {list(value)} "
                             "(e.g. [0.75, 1.25]; [1, 1] turns the scale jitter off)")
        return value

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else Path(self.root) / p


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.02, gt=0, description="base learning rate (peak lr of onecycle unless max_lr)")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="SGD momentum (ignored by AdamW)")
    weight_decay: float = Field(default=1e-4, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    decay_norm_and_bias: bool = Field(default=False, description="apply weight decay to norm and bias parameters")
    lr_scaling: Literal["none", "linear"] = Field(
        default="none",
        description="linear: lr (and schedule.max_lr) are per reference_batch images and scale with the images per step",
    )
    reference_batch: int = Field(
        default=16, gt=0, description="images per optimizer step that lr is given for (torchvision's 8 GPUs x 2)"
    )


class ScheduleConfig(_Strict):
    name: Literal["onecycle", "cosine", "multistep", "constant"] = "multistep"
    warmup_steps: int = Field(default=0, ge=0, description="linear warm-up optimizer steps, at most one epoch (not onecycle)")
    warmup_factor: float = Field(default=0.001, gt=0, le=1.0, description="lr multiplier at step 0 of warm-up")
    milestones: list[float] = Field(
        default_factory=lambda: [16 / 26, 22 / 26],
        description="multistep: fractions of the run (<1) or epochs (>=1) where lr drops by gamma",
    )
    gamma: float = Field(default=0.1, gt=0, le=1.0)
    max_lr: float | None = Field(default=None, gt=0, description="onecycle peak lr; default optim.lr")
    pct_start: float = Field(default=0.3, gt=0, lt=1)
    div_factor: float = Field(default=25.0, gt=1)
    final_div_factor: float = Field(default=1e4, gt=1)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="cosine: final lr as a fraction of lr")
    cycle_momentum: bool = Field(
        default=False,
        description="onecycle: cycle SGD momentum / AdamW beta1 from max_momentum to base_momentum and back, "
        "replacing optim.momentum / optim.betas[0]",
    )
    base_momentum: float = Field(default=0.85, ge=0.0, lt=1.0, description="onecycle momentum at the peak lr")
    max_momentum: float = Field(default=0.95, ge=0.0, lt=1.0, description="onecycle momentum at the start and end")

    @model_validator(mode="after")
    def _momentum_range(self) -> ScheduleConfig:
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                f"schedule.base_momentum ({self.base_momentum}) must be <= schedule.max_momentum ({self.max_momentum})"
            )
        return self


class MlflowConfig(_Strict):
    enabled: bool = True
    experiment: str = "raypose"
    tracking_uri: str | None = Field(default=None, description="default: $MLFLOW_TRACKING_URI, else MLflow's own")
    run_name: str | None = None
    parent_run_id: str | None = Field(default=None, description="set by `raypose tune` for trial runs")
    run_id: str | None = Field(default=None, description="log into this existing run (set by `raypose tune`)")
    tags: dict[str, str] = Field(default_factory=dict)
    params: list[str] | None = Field(
        default=None, description="the config keys logged as MLflow params (`raypose tune` sets a trial's searched "
        "keys plus backbone, epochs and images per step); default: every setting. The whole resolved config is "
        "always logged as the artifact config.yaml",
    )
    system_metrics: bool = Field(default=True, description="log CPU, memory, disk, network and GPU use (system/*) "
                                 "from the rank-0 worker")
    system_metrics_interval_s: float = Field(default=10.0, gt=0)

    @field_validator("tracking_uri")
    @classmethod
    def _home(cls, value: str | None) -> str | None:
        return expand_home(value)


class TrainConfig(_Strict):
    name: str = Field(default="raypose", description="run name: a rerun with the same name resumes")
    storage_path: str = Field(default="runs", description="checkpoints and results (s3:// or NFS on clusters)")
    seed: int = 0
    epochs: int = Field(default=26, gt=0)
    batch_size: int = Field(default=2, gt=0, description="images per worker per micro-batch")
    accumulate: int = Field(default=1, gt=0, description="micro-batches per optimizer step")
    amp: bool = Field(default=True, description="mixed precision (float16 autocast + GradScaler) on GPU")
    grad_clip: float | None = Field(default=None, gt=0, description="max global grad norm")
    workers: int = Field(default=1, ge=0, description="Ray Train workers; 0 = local (one process)")
    use_gpu: bool | Literal["auto"] = Field(
        default="auto", description="true, false, or auto (GPUs when the Ray cluster has them at start)"
    )
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=1.0, gt=0, description="below 1: several workers (trials) share a GPU")
    eval_batch_size: int = Field(default=4, gt=0)
    eval_every: int = Field(default=1, gt=0, description="evaluate every N epochs (and after the last)")
    foot_sigmas: Literal["raypose", "wholebody"] = Field(
        default="raypose", description="the sigmas foot_ap scores the 6 foot points with: raypose's (0.062 each, "
        "as in oks_map) or COCO-WholeBody's (comparable with WholeBody foot AP)",
    )
    inference: InferenceOptions = Field(
        default_factory=InferenceOptions,
        description="inference options of every evaluation this config runs (flip_test, rescore, oks_nms, "
        "keypoint_probs; all off: stock KeypointRCNN); a study's final stage measures each on its own",
    )
    keep_checkpoints: int = Field(default=2, gt=0)
    checkpoint_upload: Literal["async", "sync"] = Field(
        default="async",
        description="on Ray Train: async uploads a checkpoint in the background while training goes on (Train "
        "registers it, and a resume can use it, only once it is stored whole); sync waits for the upload",
    )
    max_failures: int = Field(
        default=2, ge=-1,
        description="Ray Train restarts the workers from the last checkpoint after a lost worker or node, up to N "
        "times per run (-1: no limit); out of memory, non-finite losses and bad input are never retried",
    )
    checkpoint_every_min: float | None = Field(
        default=None, gt=0,
        description="also checkpoint every N minutes inside an epoch, with the position in it (preemptible nodes)",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK", description="how a run's workers are placed on nodes (Ray placement group strategy)",
    )
    log_every: int = Field(default=20, gt=0, description="log training progress every N optimizer steps")
    activation_stats: list[str] = Field(
        default_factory=list, description="module names whose activations are summarised each epoch"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    @field_validator("use_gpu", mode="before")
    @classmethod
    def _gpu_words(cls, value: Any) -> Any:
        """``yes``/``no`` (and YAML's other spellings) as booleans; ``auto`` as it is."""
        words = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}
        return words.get(value.lower(), value) if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # the run folder is storage_path/name: a separator or '..' would put it elsewhere
        return check_plain_name(v, "name", "storage_path")

    @field_validator("storage_path")
    @classmethod
    def _home(cls, value: str) -> str:
        return expand_home(value)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if "://" in self.storage_path and not self.storage_path.startswith(("s3://", "gs://", "file://")):
            raise ValueError(f"storage_path {self.storage_path!r}: use a local path, s3://, gs:// or file://")
        return self

    @property
    def run_dir(self) -> str:
        return os.path.join(self.storage_path, self.name)


def absolute_path(value: str, base_dir: str | os.PathLike | None = None) -> str:
    """A local path made absolute against ``base_dir`` (default: the current folder), ``~`` expanded;
    URIs unchanged."""
    if "://" in value:
        return value
    value = expand_home(value)
    if os.path.isabs(value):
        return value
    return str(Path(base_dir or os.getcwd()) / value)


def resolve_config(config: TrainConfig, base_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Fix what depends on where the command runs, once, before anything is sent to Ray.

    Relative local paths (data root, storage, weight files) become absolute against ``base_dir``
    and the MLflow tracking URI is resolved (config, else ``$MLFLOW_TRACKING_URI``, else MLflow's
    default, made absolute), so Ray workers in other folders read the same files and runs.
    """
    model_updates = {
        key: absolute_path(getattr(config.model, key), base_dir)
        for key in ("weights", "backbone_weights")
        if getattr(config.model, key) not in (None, "coco", "imagenet")
    }
    mlflow = config.mlflow
    if mlflow.enabled:
        from raypose.experiment_log import resolve_tracking_uri

        mlflow = mlflow.model_copy(update={"tracking_uri": resolve_tracking_uri(mlflow.tracking_uri, base_dir)})
    return config.model_copy(
        update={
            "storage_path": absolute_path(config.storage_path, base_dir),
            "data": config.data.model_copy(update={"root": absolute_path(config.data.root, base_dir)}),
            "model": config.model.model_copy(update=model_updates),
            "mlflow": mlflow,
        }
    )


# Differ from run to run without describing the recipe: MLflow gets them as tags, not params.
IDENTITY_KEYS = ("name", "storage_path")


def recipe_params(config: TrainConfig) -> dict[str, Any]:
    """The flat config a user compares runs by (MLflow params): without run identity or MLflow settings."""
    return {k: v for k, v in flatten(config).items() if k not in IDENTITY_KEYS and not k.startswith("mlflow.")}


def identity_tags(config: TrainConfig) -> dict[str, str]:
    """Run identity as MLflow tags (``raypose.name``, ``raypose.storage_path``)."""
    return {f"raypose.{k}": str(getattr(config, k)) for k in IDENTITY_KEYS}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as flat dotted keys (``optim.lr``), for MLflow params and Tune."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump()
    flat: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            flat.update(flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: obj}


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``key = "a.b"``, creating dicts on the way."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["optim.lr=0.01", "model.freeze=roi"]`` to ``{"optim.lr": 0.01, ...}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set optim.lr=0.01")
        out[key.strip()] = _parse_value(raw, f"--set {pair}")
    return out


def _parse_value(raw: str, source: str) -> Any:
    """A YAML scalar or list; ``1e-3`` is a float too (YAML 1.1 reads it as a string).

    Raises:
        ConfigError: not valid YAML (``[1``), naming ``source`` (the ``--set`` argument).
    """
    if not raw.strip():
        return None
    try:
        value = parse_yaml(raw.encode(), source)
    except InputError as e:
        raise ConfigError(str(e)) from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_yaml(path: str | os.PathLike, what: str = "training config") -> dict[str, Any]:
    """A YAML mapping from a file (:func:`raypose.yaml_io.load_yaml_mapping`).

    Raises:
        InputError: missing, binary or non-UTF-8 file, YAML syntax error, a key given twice, or
            a top level that is not a mapping.
    """
    return load_yaml_mapping(path, what)


def validate_train_config(raw: dict[str, Any], source: str = "config") -> TrainConfig:
    """Validate a nested dict into a :class:`TrainConfig`, with errors that name key and choices."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def format_validation_error(error: ValidationError, source: str, prefix: str = "") -> str:
    """One line per invalid setting, each naming its dotted key (under ``prefix``, e.g. ``tune.``)."""
    lines = [f"{source}: {error.error_count()} invalid setting(s):"]
    for err in error.errors():
        key = prefix + ".".join(str(p) for p in err["loc"]) if err["loc"] else prefix.rstrip(".") or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; see the documented keys in README)")
        elif err["type"] == "literal_error":
            lines.append(f"  {key}: {err['input']!r} is not valid; {err['msg'].lower()}")
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            lines.append(f"  {key}: must be a mapping of settings (`{key.rsplit('.', 1)[-1]}: {{key: value}}` or "
                         f"indented `key: value` lines), not {describe_type(err['input'])}")
        elif err["type"] == "finite_number":
            lines.append(f"  {key}: must be a finite number (got {err.get('input')!r})")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_train_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path``, apply ``--set`` overrides, validate, and :func:`resolve_config` against the
    current folder."""
    raw = read_yaml(path)
    for key, value in parse_overrides(overrides).items():
        set_dotted(raw, key, value)
    return resolve_config(validate_train_config(raw, source=str(path)))


def save_resolved_config(config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write the fully resolved config (every default filled in) as YAML, atomically."""
    from raypose.io import write_text_atomic

    return write_text_atomic(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
