"""Does a trial fit the cluster? Pure arithmetic on what a trial asks for and what the cluster
can ever give; :mod:`raypose.training.ray_train` reads both from Ray. No Ray here.

A trial that asks for more than the cluster can ever give would wait forever for its placement
group; it is refused up front with the numbers and the ``--set`` that fits, or, on a machine
where raypose started Ray itself (whose size is known and fixed), fitted to the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from raypose.errors import ConfigError

_EPS = 1e-9  # fractional GPUs: 4 x 0.25 must fit in 1


@dataclass(frozen=True)
class TrialRequest:
    """What one trial holds: its Train workers, plus the CPU of its (Tune) driver."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0 when the workers train on CPUs
    driver_cpus: float = 0.0

    @property
    def cpus(self) -> float:
        return self.workers * self.cpus_per_worker + self.driver_cpus

    @property
    def gpus(self) -> float:
        return self.workers * self.gpus_per_worker


@dataclass(frozen=True)
class Capacity:
    """The most a cluster can ever give: in all (``cpus``, ``gpus``) and on its largest node
    (``node_cpus``, ``node_gpus``; one worker runs on one node). For an autoscaling cluster,
    the autoscaler's maximum; otherwise what its nodes have."""

    cpus: float
    gpus: float
    node_cpus: float
    node_gpus: float


def fits(request: TrialRequest, capacity: Capacity) -> bool:
    """Whether the cluster can ever place the trial."""
    return (request.cpus <= capacity.cpus + _EPS and request.gpus <= capacity.gpus + _EPS
            and request.cpus_per_worker <= capacity.node_cpus + _EPS
            and request.gpus_per_worker <= capacity.node_gpus + _EPS)


def largest_fit(request: TrialRequest, capacity: Capacity) -> TrialRequest | None:
    """The request with as many of its workers as the cluster holds (per-worker resources cut
    to the largest node), or ``None`` when not even one worker fits (e.g. GPUs asked, none there)."""
    gpw = min(request.gpus_per_worker, capacity.node_gpus)
    cpw = min(request.cpus_per_worker, capacity.node_cpus)
    if (request.gpus_per_worker > 0 and gpw <= 0) or cpw <= 0:
        return None
    workers = min(request.workers, math.floor((capacity.cpus - request.driver_cpus) / cpw + _EPS))
    if gpw > 0:
        workers = min(workers, math.floor(capacity.gpus / gpw + _EPS))
    if workers < 1:
        return None
    return replace(request, workers=workers, cpus_per_worker=cpw, gpus_per_worker=gpw)


def fitting_overrides(request: TrialRequest, capacity: Capacity) -> list[str]:
    """The ``--set`` overrides that make ``request`` fit (``use_gpu=false`` first when no GPU
    can be had)."""
    fitted = largest_fit(request, capacity)
    if fitted is None:
        if request.gpus_per_worker <= 0:
            return []
        on_cpus = replace(request, gpus_per_worker=0.0)
        return ["use_gpu=false", *fitting_overrides(on_cpus, capacity)]
    return [f"{key}={_number(getattr(fitted, key))}" for key in ("workers", "cpus_per_worker", "gpus_per_worker")
            if getattr(fitted, key) != getattr(request, key)]


def fit_trial(request: TrialRequest, capacity: Capacity, adjust: bool) -> TrialRequest:
    """The request, if it fits; else, with ``adjust``, the largest one that does.

    Raises:
        ConfigError: it does not fit (and may not or cannot be adjusted); the message gives the
            GPUs and CPUs asked for and available and the ``--set`` that fits.
    """
    if fits(request, capacity):
        return request
    fitted = largest_fit(request, capacity)
    if adjust and fitted is not None:
        return fitted
    overrides = fitting_overrides(request, capacity)
    fix = (" ".join(f"--set {o}" for o in overrides) + " fits; or add nodes") if overrides else "add nodes"
    raise ConfigError(f"a trial asks for {describe_request(request)}, and the Ray cluster can give at most "
                      f"{describe_capacity(capacity)}: it would wait forever. {fix}")


def describe_request(request: TrialRequest) -> str:
    return (f"{_number(request.gpus)} GPU(s) and {_number(request.cpus)} CPU(s) (workers={request.workers} x "
            f"{_number(request.gpus_per_worker)} GPU, {_number(request.cpus_per_worker)} CPU each, "
            f"+ {_number(request.driver_cpus)} CPU for the trial's driver)")


def describe_capacity(capacity: Capacity) -> str:
    return (f"{_number(capacity.gpus)} GPU(s) and {_number(capacity.cpus)} CPU(s) "
            f"(largest node: {_number(capacity.node_gpus)} GPU(s), {_number(capacity.node_cpus)} CPU(s))")


def _number(value: float) -> str:
    return f"{value:g}"
