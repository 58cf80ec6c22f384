"""``raypose predict``: options and --out are checked before the model is loaded or run."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

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


def test_load_image_decodes_a_16bit_png_like_its_8bit_version(tmp_path):
    from raypose.inference import load_image
    from tests.test_images import gray_gradient, save_gray16

    gray = gray_gradient()
    Image.fromarray(gray).save(tmp_path / "8bit.png")
    image16 = load_image(save_gray16(tmp_path / "16bit.png", gray))
    image8 = load_image(tmp_path / "8bit.png")
    assert image16.shape == image8.shape == (3, *gray.shape)
    assert (image16 - image8).abs().max().item() <= 1 / 255 + 1e-6
    assert image16.min().item() == 0.0  # not the white image a clipping decoder gives


@pytest.mark.parametrize("make", ["missing folder", "empty folder"])
def test_predict_on_a_folder_without_images_is_one_error_naming_it(synth_data, tmp_path, capsys, no_model, make):
    folder = tmp_path / "frames"
    if make == "empty folder":
        folder.mkdir()
    argv = predict_argv(synth_data, tmp_path)
    argv[2] = str(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("raypose predict: error: ") and err.count("\n") == 1 and str(folder) in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained CPU-sized model that keeps every box (score threshold 0), so it detects something."""
    from raypose.checkpoint import save_checkpoint
    from raypose.model import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(num_keypoints=23, backbone="resnet18", weights=None, backbone_weights=None, min_size=96,
                         max_size=128, keypoint_head_channels=[16] * 2, box_head_size=64, box_score_thresh=0.0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", build_model(config), config)


def test_overlapping_inputs_are_predicted_once(synth_data, tmp_path, tiny_checkpoint, caplog):
    import json
    import os
    import shutil

    folder = tmp_path / "images"
    folder.mkdir()
    first, second = sorted(synth_data.val_images.iterdir())[:2]
    image = shutil.copy(first, folder / first.name)
    shutil.copy(second, folder / second.name)
    (tmp_path / "links").mkdir()
    os.symlink(image, tmp_path / "links" / first.name)  # the annotation file knows its name

    def predict(inputs, out):
        return raypose.predict.predict_to_results(tiny_checkpoint, inputs, tmp_path / out, ann=synth_data.val_ann,
                                                  device="cpu", batch_size=2)

    assert predict([folder], "once.json")[0] == 2
    with caplog.at_level("WARNING", logger="raypose.predict"):
        overlapping = [folder, image, folder / ".." / "images" / first.name, tmp_path / "links" / first.name]
        assert predict(overlapping, "overlap.json")[0] == 2
    once = json.loads((tmp_path / "once.json").read_text())
    assert once, "the tiny model must detect something for the comparison to mean anything"
    assert json.loads((tmp_path / "overlap.json").read_text()) == once
    assert "3 duplicate" in caplog.text
