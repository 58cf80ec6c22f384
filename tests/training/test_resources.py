"""Does a trial fit the cluster: refused with the numbers and the --set that fits, or fitted to a
machine where raypose started Ray; fractional GPUs pack. One real check on a local Ray instance."""

from __future__ import annotations

import time

import pytest

from raypose.errors import ConfigError
from raypose.training.resources import Capacity, TrialRequest, fit_trial, fits, largest_fit

WORKSTATION = Capacity(cpus=16, gpus=1, node_cpus=16, node_gpus=1)  # one GPU, one node
COCO_R50 = TrialRequest(workers=8, cpus_per_worker=1, gpus_per_worker=1, driver_cpus=0.1)  # configs/coco_r50.yaml


def test_a_trial_that_fits_is_left_alone():
    request = TrialRequest(workers=1, cpus_per_worker=4, gpus_per_worker=1, driver_cpus=0.1)
    assert fit_trial(request, WORKSTATION, adjust=False) is request


def test_an_oversized_trial_is_refused_with_the_numbers_and_the_fix():
    with pytest.raises(ConfigError) as e:
        fit_trial(COCO_R50, WORKSTATION, adjust=False)
    message = str(e.value)
    assert "8 GPU(s) and 8.1 CPU(s)" in message  # asked for
    assert "at most 1 GPU(s) and 16 CPU(s)" in message  # available
    assert "--set workers=1 fits" in message


def test_an_oversized_trial_is_fitted_to_a_machine_raypose_started():
    fitted = fit_trial(COCO_R50, WORKSTATION, adjust=True)
    assert (fitted.workers, fitted.gpus_per_worker, fitted.cpus_per_worker) == (1, 1, 1)
    # the CPUs bound the workers too: 3 CPUs, 0.5 for the driver, 1 per worker -> 2 workers
    cpu_only = fit_trial(TrialRequest(4, 1, 0, 0.5), Capacity(3, 0, 3, 0), adjust=True)
    assert cpu_only.workers == 2


def test_gpus_asked_on_a_cluster_without_any_say_use_gpu_false():
    assert largest_fit(COCO_R50, Capacity(cpus=16, gpus=0, node_cpus=16, node_gpus=0)) is None
    with pytest.raises(ConfigError, match="--set use_gpu=false fits"):
        fit_trial(COCO_R50, Capacity(cpus=16, gpus=0, node_cpus=16, node_gpus=0), adjust=True)


def test_a_worker_must_fit_on_one_node():
    # 2 nodes of 1 GPU: 2 GPUs in all, but a 2-GPU worker fits on neither
    request = TrialRequest(workers=1, cpus_per_worker=1, gpus_per_worker=2)
    two_nodes = Capacity(cpus=16, gpus=2, node_cpus=8, node_gpus=1)
    assert not fits(request, two_nodes)
    with pytest.raises(ConfigError, match="--set gpus_per_worker=1 fits"):
        fit_trial(request, two_nodes, adjust=False)


def test_fractional_gpus_pack_several_workers_on_one_gpu():
    quarter = TrialRequest(workers=4, cpus_per_worker=1, gpus_per_worker=0.25)
    assert fits(quarter, WORKSTATION)
    assert not fits(TrialRequest(workers=5, cpus_per_worker=1, gpus_per_worker=0.25), WORKSTATION)


@pytest.mark.ray
def test_an_oversized_search_fails_within_seconds(ray_local, tiny_train_config, tmp_path, capsys):
    """The local Ray instance (6 CPUs, no GPU) was not started by raypose: a GPU trial is refused."""
    import yaml

    from raypose.cli.main import main

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "base": {**tiny_train_config, "workers": 2},
        "search": {"optim.lr": {"loguniform": [1.0e-3, 2.0e-3]}},
        "tune": {"num_samples": 2, "storage_path": str(tmp_path / "runs")},
    }))
    start = time.monotonic()
    assert main(["tune", str(space), "--set", "use_gpu=true", "--set", "cpus_per_worker=4"]) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert "2 GPU(s) and 8.1 CPU(s)" in err and "at most 0 GPU(s) and 6 CPU(s)" in err
    assert "--set use_gpu=false --set workers=1 fits" in err
    assert not (tmp_path / "runs").exists()  # no trial started
