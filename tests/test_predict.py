"""``raypose predict``: options and --out are checked before the model is loaded or run."""

from __future__ import annotations

import pytest
import torch

import raypose.predict
from raypose.cli.main import main
from raypose.errors import ConfigError
from raypose.inference import resolve_device


@pytest.fixture
def no_model(monkeypatch):
    """Loading the checkpoint means the checks came too late: fail the test loudly if it happens."""

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(raypose.predict, "load_model_from_checkpoint", loaded)
    monkeypatch.setattr(raypose.predict, "predict_files", loaded)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def predict_argv(synth_data, tmp_path, *options):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"not read: every check comes first")
    return ["predict", str(ckpt), str(synth_data.val_images), "--ann", str(synth_data.val_ann),
            "--out", str(tmp_path / "dets.json"), *options]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "-3"], "--batch-size must be at least 1"),
        (["--score-thresh", "2"], r"--score-thresh must be in [0, 1]"),
        (["--score-thresh", "-0.1"], r"--score-thresh must be in [0, 1]"),
        (["--score-thresh", "nan"], r"--score-thresh must be in [0, 1]"),
        (["--score-thresh", "inf"], r"--score-thresh must be in [0, 1]"),
        (["--device", "cuda"], "CUDA is not available on this machine; use --device cpu"),
        (["--device", "cuda:1"], "CUDA is not available"),
        (["--device", "gpu"], "not a device; valid: auto, cpu, cuda or cuda:N"),
        (["--device", "meta"], "raypose runs on auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_options_exit_2_before_the_model_runs(synth_data, tmp_path, capsys, no_model, no_cuda, options, message):
    assert main(predict_argv(synth_data, tmp_path, *options)) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypose predict: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "dets.json").exists()


def test_out_folder_is_refused_before_inference(synth_data, tmp_path, capsys, no_model):
    argv = predict_argv(synth_data, tmp_path)
    (tmp_path / "dets.json").mkdir()
    assert main(argv) == 2
    assert f"--out {tmp_path / 'dets.json'}: is a folder; --out names the file" in capsys.readouterr().err
    assert list((tmp_path / "dets.json").iterdir()) == []


def test_out_equal_to_the_annotation_file_is_refused(synth_data, tmp_path, capsys, no_model):
    ann = tmp_path / "ann.json"
    ann.write_bytes(synth_data.val_ann.read_bytes())
    argv = predict_argv(synth_data, tmp_path)
    argv[argv.index("--ann") + 1] = str(ann)
    argv[argv.index("--out") + 1] = str(ann)
    assert main(argv) == 2
    assert "is also an input" in capsys.readouterr().err
    assert ann.read_bytes() == synth_data.val_ann.read_bytes()


def test_resolve_device(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device 'cuda:0': CUDA is not available"):
        resolve_device("cuda:0")


def test_gpu_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"this machine has 2 CUDA devices \(cuda:0 ...\)"):
        resolve_device("cuda:2")
