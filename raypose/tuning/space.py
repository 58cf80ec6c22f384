"""Search spaces: a YAML file with a base training config, distributions and Tune settings.

```yaml
base: ../configs/coco_r50.yaml      # a training config file (relative to this file) or a mapping
search:
  optim.name: {choice: [sgd, adamw]}
  optim.lr: {loguniform: [1.0e-4, 3.0e-2]}
  optim.momentum: {uniform: [0.8, 0.99], when: {optim.name: sgd}}
  schedule.max_lr: {loguniform: [1.0e-3, 3.0e-2], when: {schedule.name: onecycle}}
  accumulate: {int: [1, 4]}
tune: {num_samples: 24, max_concurrent: 4, grace_period: 2}
```

Keys are dotted training-config keys. ``when`` makes a dimension conditional on other sampled
(or base) values. A key may instead list alternatives, the first whose ``when`` holds is used:

```yaml
  optim.lr:
    - {loguniform: [1.0e-4, 3.0e-3], when: {optim.name: adamw}}
    - {loguniform: [5.0e-3, 5.0e-2], when: {optim.name: sgd}}
```

Optuna sees each alternative as its own parameter (``optim.lr|1``), since the ranges differ;
everywhere a user reads a value (Tune's config and trial names, MLflow, reports) it is ``optim.lr``.
Pure Python + Optuna: no Ray here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raypose.errors import ConfigError
from raypose.training.config import (
    IDENTITY_KEYS,
    TrainConfig,
    absolute_path,
    check_plain_name,
    flatten,
    format_validation_error,
    parse_overrides,
    read_yaml,
    resolve_config,
    set_dotted,
    validate_train_config,
)
from raypose.yaml_io import describe_type

# torchvision's reference recipe for KeypointRCNN (references/detection: SGD, lr 0.02, momentum 0.9,
# weight decay 1e-4, lr x0.1 at epochs 36 and 43 of 46, linear warm-up over at most one epoch).
# Every search runs it first so that the best trial's gain over the default is always measured.
BASELINE_RECIPE: dict[str, Any] = {
    "optim.name": "sgd",
    "optim.lr": 0.02,
    "optim.momentum": 0.9,
    "optim.weight_decay": 1e-4,
    "schedule.name": "multistep",
    "schedule.milestones": [36 / 46, 43 / 46],
    "schedule.gamma": 0.1,
    "schedule.warmup_steps": 1000,
    "schedule.warmup_factor": 0.001,
    # lr 0.02 is for 16 images per optimizer step (8 GPUs x 2): the baseline keeps that per-image lr
    "optim.lr_scaling": "linear",
    "optim.reference_batch": 16,
}
TRIAL_KIND_KEY = "trial_kind"

log = logging.getLogger(__name__)


class Distribution(BaseModel):
    """Exactly one of ``choice``, ``uniform``, ``loguniform``, ``int``; optional ``when``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = Field(default=None, alias="int")
    when: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        kinds = [k for k in ("choice", "uniform", "loguniform", "int_range") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform, int")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        for name in ("uniform", "loguniform", "int_range"):
            bounds = getattr(self, name)
            if bounds is not None and not bounds[0] <= bounds[1]:
                raise ValueError(f"{name}: low must be <= high, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be > 0")
        return self

    def examples(self) -> list[Any]:
        """Values that cover the distribution's extremes (used to validate against the config)."""
        if self.choice is not None:
            return list(self.choice)
        return list(self.uniform or self.loguniform or self.int_range)

    def suggest(self, trial: Any, name: str) -> Any:
        """Sample with an Optuna trial (or Ray's captor around one)."""
        if self.choice is not None:
            return trial.suggest_categorical(name, self.choice)
        if self.uniform is not None:
            return trial.suggest_float(name, *self.uniform)
        if self.loguniform is not None:
            return trial.suggest_float(name, *self.loguniform, log=True)
        return trial.suggest_int(name, *self.int_range)


class AshaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    grace_period: int = Field(default=1, ge=1, description="epochs before a trial may be stopped")
    reduction_factor: float = Field(default=3.0, gt=1)


class TuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, allow_inf_nan=False)

    name: str | None = Field(default=None, description="study name; default: the space file's stem")
    num_samples: int = Field(default=16, ge=1, description="trials, the baseline included")
    max_concurrent: int = Field(default=2, ge=1, description="trials (Train runs) in flight at once")
    seed: int = 0
    baseline: bool = Field(default=True, description="run torchvision's default recipe as the first trial")
    asha: AshaSettings = Field(default_factory=AshaSettings)
    max_failures: int = Field(default=2, ge=0, description="retries of a failed trial from its last checkpoint")
    trial_cpus: float = Field(default=0.1, ge=0, description="CPU held by each trial's driver (not its workers)")
    trial_resources: dict[str, float] = Field(
        default_factory=dict, description="custom resources each trial's driver holds too, e.g. {on_demand: 0.001} "
        "to keep drivers off spot nodes (the cluster configs give on_demand to the head and on-demand nodes)",
    )
    storage_path: str = Field(default="runs", description="Tune and Train results; s3:// or NFS on clusters")
    require_shared_storage: bool | None = Field(
        default=None, description="fail unless storage_path is shared; default: yes on a cluster raypose "
        "connects to ($RAY_ADDRESS, every Ray job) or one with >1 node; false declares an NFS path"
    )
    keep_checkpoints: Literal["best", "all"] = Field(
        default="best", description="best: each trial keeps its best evaluated checkpoint and its latest while it "
        "runs, then only its best; after the final stage only the best trial's and the baseline's. all: keep every "
        "checkpoint Train keeps (base keep_checkpoints)",
    )
    worst: int = Field(default=100, ge=1, description="worst images rendered by the final error analysis")
    final_analysis: bool = True
    inference_options: bool = Field(
        default=True, description="the final stage measures each inference option (flip test, rescoring, OKS-NMS, "
        "keypoint probabilities) alone and all together on the search's validation images, keeps the set that "
        "scores best there (stock on a tie), and reports every one on the held-out images",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        # the study's folder is storage_path/name: a separator or '..' would put it elsewhere
        return value if value is None else check_plain_name(value, "tune.name", "tune.storage_path")


class SearchSpace(BaseModel):
    """A validated search space file: a frozen, resolved base config, dimensions, Tune settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    base: TrainConfig
    search: dict[str, list[Distribution]]
    tune: TuneSettings

    @property
    def name(self) -> str:
        return self.tune.name or Path(self.source).stem

    @property
    def tune_dir(self) -> str:
        """Tune's experiment folder: ``<tune.storage_path>/<name>`` (a path or a URI)."""
        return f"{self.tune.storage_path}/{self.name}"

    @property
    def train_storage(self) -> str:
        """Where the trials' Ray Train runs keep checkpoints: ``<tune.storage_path>/<name>_train``."""
        return f"{self.tune.storage_path}/{self.name}_train"

    @property
    def study_dir(self) -> str:
        """Where the study's own files live (the parent run id, ``best/``): Tune's experiment
        folder ``<tune.storage_path>/<name>``, a path or a URI, so that a job on any node (and
        a later ``--resume`` job) finds them."""
        return self.tune_dir

    def trial_config(self, params: dict[str, Any], name: str) -> TrainConfig:
        """The base config with a trial's values applied (dotted config keys, as Tune's config
        holds them; ``trial_kind`` is not a config key). The one place a trial's config is made."""
        raw = self.base.model_dump(mode="json")
        for key, value in params.items():
            if key != TRIAL_KIND_KEY:
                set_dotted(raw, key, value)
        raw["name"] = name
        return validate_train_config(raw, source=f"{self.source}: trial {name}")


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A Tune trial's searched values under their config keys (``trial_kind`` left out)."""
    return {k: v for k, v in config.items() if k != TRIAL_KIND_KEY}


class SpaceSampler:
    """Optuna define-by-run sampling of a :class:`SearchSpace` (a picklable callable).

    Called with an Optuna trial (in Tune: Ray's wrapper around one), it returns the trial's
    config: ``{config key: value, "trial_kind": "baseline" | "search"}``. Optuna names a
    dimension with alternatives ``key|i`` (one parameter per range); Ray's ``OptunaSearch`` also
    records every ``suggest_*`` call under that name, which :mod:`raypose.tuning.search` drops
    so Tune's config carries only config keys.

    Dimensions are sampled in file order, except that a dimension comes after those its ``when``
    names (:func:`sampling_order`); one whose ``when`` does not hold (against the values sampled
    so far, then the base config) is skipped, so e.g. momentum exists only for SGD trials. The study's first trial is the baseline recipe when enabled: it samples nothing,
    so TPE sees it as an observation without parameters rather than a point in the space.
    """

    def __init__(self, space: SearchSpace):
        self.search = {key: space.search[key] for key in sampling_order(space.search)}
        self.base_flat = flatten(space.base)
        self.baseline = space.tune.baseline

    def __call__(self, trial: Any) -> dict[str, Any]:
        if self.baseline and trial.number == 0:
            return {**BASELINE_RECIPE, TRIAL_KIND_KEY: "baseline"}
        sampled: dict[str, Any] = {}
        for key, alternatives in self.search.items():
            for i, dist in enumerate(alternatives):
                if all(sampled.get(k, self.base_flat.get(k)) == v for k, v in dist.when.items()):
                    sampled[key] = dist.suggest(trial, optuna_name(key, i, len(alternatives)))
                    break
        return {**sampled, TRIAL_KIND_KEY: "search"}


OPTUNA_ALTERNATIVE_SEP = "|"


def sampling_order(search: dict[str, list[Distribution]]) -> list[str]:
    """The searched keys in file order, moved so that each comes after the searched keys its
    ``when`` conditions name.

    Raises:
        ConfigError: the conditions form a cycle (``a`` when ``b``, ``b`` when ``a``).
    """
    needs = {key: {c for d in alts for c in d.when if c in search and c != key} for key, alts in search.items()}
    order: list[str] = []
    while len(order) < len(search):
        ready = [k for k in search if k not in order and needs[k] <= set(order)]
        if not ready:
            cycle = sorted(k for k in search if k not in order)
            raise ConfigError(f"search: the when: conditions of {cycle} depend on each other in a cycle")
        order.append(ready[0])
    return order


def optuna_name(key: str, index: int, alternatives: int) -> str:
    """Optuna's name for alternative ``index`` of dimension ``key`` (``optim.lr|1``); the key itself
    when it has one distribution."""
    return key if alternatives == 1 else f"{key}{OPTUNA_ALTERNATIVE_SEP}{index}"


def load_search_space(path: str | os.PathLike, overrides: list[str] | None = None) -> SearchSpace:
    """Read and validate a search space file; ``--set`` overrides apply to the base config
    (``optim.lr=...``) or, prefixed with ``tune.``, to the Tune settings.

    Raises:
        ConfigError: bad YAML, unknown keys, distributions that do not fit the config (naming
            the search key and the valid choices), or a base config that does not validate.
    """
    path = Path(path)
    raw = read_yaml(path, what="search space")
    unknown = set(raw) - {"base", "search", "tune"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; valid: base, search, tune")
    base = raw.get("base", {})
    if isinstance(base, str):
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        base = read_yaml(base_path)
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: base must be a training config mapping or the path of one, not {describe_type(base)}")
    search_raw = _section(raw, "search", path, "config keys to distributions (`optim.lr: {loguniform: [1.0e-4, 1.0e-2]}`)")
    tune_raw = dict(_section(raw, "tune", path, "Tune settings (`num_samples: 16`)"))
    for key, value in parse_overrides(overrides).items():
        if key.startswith("tune."):
            set_dotted(tune_raw, key[len("tune.") :], value)
        else:
            set_dotted(base, key, value)
    search = {str(key): _distributions(path, str(key), value) for key, value in search_raw.items()}
    try:
        tune = TuneSettings.model_validate(tune_raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path), prefix="tune.")) from None
    if tune.name is None:  # the study is named for the file
        try:
            check_plain_name(path.stem, "the study name (the space file's name)", "tune.storage_path")
        except ValueError as e:
            raise ConfigError(f"{path}: {e}; or set tune.name") from None
    # Relative paths are taken from the current folder, as for `raypose train`, and made absolute
    # for the Ray workers, whose working folder differs.
    base_config = resolve_config(validate_train_config(base, source=f"{path}: base"))
    tune = tune.model_copy(update={"storage_path": absolute_path(tune.storage_path)})
    space = SearchSpace(source=str(path), base=base_config, search=search, tune=tune)
    _check_dimensions(space)
    _check_baseline(space)
    return space


def _section(raw: dict[str, Any], name: str, path: Path, what: str) -> dict[str, Any]:
    """The mapping under ``name`` (``{}`` when absent or empty).

    Raises:
        ConfigError: it is a list, a string or a number.
    """
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {name} must be a mapping of {what}, not {describe_type(value)}")
    return value


def _distributions(path: Path, key: str, value: Any) -> list[Distribution]:
    """A searched key's distribution, or its list of alternatives, validated.

    Raises:
        ConfigError: naming ``search.KEY`` (``search.KEY[i]`` for an alternative) and what is wrong.
    """
    alternatives = value if isinstance(value, list) else [value]
    out = []
    for i, spec in enumerate(alternatives):
        where = f"search.{key}[{i}]" if isinstance(value, list) else f"search.{key}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: {where}: must be a distribution such as {{choice: [a, b]}}, {{uniform: [low, "
                              f"high]}}, {{loguniform: [low, high]}} or {{int: [low, high]}} (or a list of them), not "
                              f"{describe_type(spec)}")
        try:
            out.append(Distribution.model_validate(spec))
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, str(path), prefix=f"{where}.")) from None
    return out


# Settings every trial gets from the study, whatever the search says.
NOT_SEARCHABLE = {
    "name": "each trial's run is named by the study (<study>-<trial id>); name the study with tune.name",
    "storage_path": "trials keep their checkpoints under tune.storage_path; set that instead",
}
assert set(IDENTITY_KEYS) <= set(NOT_SEARCHABLE)


def _check_searchable(space: SearchSpace, key: str) -> None:
    reason = NOT_SEARCHABLE.get(key)
    if key.startswith("mlflow."):
        reason = "MLflow settings say where a trial is logged, not how it trains; set them in base"
    if reason:
        raise ConfigError(f"{space.source}: search.{key} cannot be searched: {reason}")


def _check_dimensions(space: SearchSpace) -> None:
    """Each dimension's extreme values must validate against the training config."""
    known = set(space.search) | set(flatten(space.base))
    try:
        sampling_order(space.search)
    except ConfigError as e:
        raise ConfigError(f"{space.source}: {e}") from None
    for key, alternatives in space.search.items():
        _check_searchable(space, key)
        if not alternatives:
            raise ConfigError(f"{space.source}: search.{key} lists no distribution")
        for dist in alternatives:
            _check_dimension(space, key, dist, known)
        for dist in alternatives:
            for cond, value in dist.when.items():
                problem = _never_sampled(space, cond, value) if cond in space.search else _not_a_value_of(space, cond, value)
                if problem:
                    raise ConfigError(f"{space.source}: search.{key}: when: {{{cond}: {value!r}}} can never hold: {problem}")


def _check_dimension(space: SearchSpace, key: str, dist: Distribution, known: set[str]) -> None:
    for cond in dist.when:
        if cond not in known:
            raise ConfigError(f"{space.source}: search.{key}.when names {cond!r}, which is neither searched nor in base")
    for value in dist.examples():
        raw = space.base.model_dump(mode="json")
        set_dotted(raw, key, value)
        try:
            TrainConfig.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, f"{space.source}: search.{key} value {value!r}")) from None


def _never_sampled(space: SearchSpace, cond: str, value: Any) -> str | None:
    """Why the searched key ``cond`` never takes ``value`` (compared as the sampler does, with ==),
    or None when it can."""
    alternatives = space.search[cond]
    takes = []
    for dist in alternatives:
        if dist.choice is not None:
            if value in dist.choice:
                return None
            takes.append(", ".join(_as_written(c) for c in dist.choice))
        elif dist.int_range is not None:
            low, high = dist.int_range
            if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
                return None
            takes.append(f"the integers {low} to {high}")
        else:
            return (f"search.{cond} is drawn from a continuous range, where a trial (almost) never draws one given "
                    "value: condition on a choice: or int: dimension instead")
    if all(dist.when for dist in alternatives):  # a trial that skips cond keeps the base value
        base_value = flatten(space.base).get(cond)
        if value == base_value:
            return None
        takes.append(f"{_as_written(base_value)} (the base value, when search.{cond} is skipped)")
    return f"search.{cond} takes only {'; '.join(takes)}"


def _as_written(value: Any) -> str:
    """A value as a space file writes it: ``false``, ``null``, ``'sgd'``, ``0.9``."""
    return json.dumps(value) if isinstance(value, bool) or value is None else repr(value)


def _not_a_value_of(space: SearchSpace, cond: str, value: Any) -> str | None:
    """Why the (unsearched) setting ``cond`` can never be ``value``, or None when it can; a value
    other than the base's, which no trial has, is logged."""
    raw = space.base.model_dump(mode="json")
    set_dotted(raw, cond, value)
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as e:
        lines = format_validation_error(e, "").splitlines()[1:]
        return f"{cond} is not searched, and the setting cannot take {value!r}:\n" + "\n".join(lines)
    read_as = flatten(config)[cond]
    if read_as != value:  # e.g. 'false' (a string) for a bool: the setting reads False, the condition compares 'false'
        return (f"{cond} holds {describe_type(read_as)}, not {describe_type(value)}: write "
                f"{json.dumps(read_as)} (unquoted)")
    base_value = flatten(space.base).get(cond)
    if value != base_value:
        log.warning("%s: when: {%s: %r} never holds in this study: %s is not searched and the base has %r",
                    space.source, cond, value, cond, base_value)
    return None


def _check_baseline(space: SearchSpace) -> None:
    baseline_raw = space.base.model_dump(mode="json")
    for key, value in BASELINE_RECIPE.items():
        set_dotted(baseline_raw, key, value)
    if space.tune.baseline:
        validate_train_config(baseline_raw, source=f"{space.source}: baseline recipe")
    if space.tune.num_samples < 2 and space.tune.baseline:
        raise ConfigError(f"{space.source}: tune.num_samples must be >= 2 with the baseline trial on")
    if not math.isfinite(space.tune.asha.reduction_factor):
        raise ConfigError(f"{space.source}: tune.asha.reduction_factor must be finite")
