"""End-to-end tests of ``raypose video``, ``raypose smooth`` and ``raypose video-synth`` on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raypose.cli.main import main
from raypose.video.io import probe_video, read_frames, write_video
from raypose.video.synth_video import SynthVideoConfig, generate_synthetic_video
from raypose.video.tracks_io import load_tracks

TINY = dict(
    backbone="resnet18", weights=None, backbone_weights=None, min_size=128, max_size=192,
    keypoint_head_channels=[64] * 4, box_head_size=256, box_batch_size_per_image=64, rpn_post_nms_top_n_train=300,
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from raypose.checkpoint import save_checkpoint
    from raypose.model import ModelConfig, build_model

    torch.manual_seed(0)
    # A low box threshold so the untrained model still "detects" something to track.
    config = ModelConfig(**TINY, box_score_thresh=0.0, box_detections_per_img=5)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", build_model(config), config)


@pytest.fixture(scope="module")
def synth_mp4(tmp_path_factory):
    video = generate_synthetic_video(SynthVideoConfig(num_frames=10, width=160, height=128, seed=0))
    return write_video(tmp_path_factory.mktemp("video") / "synth.mp4", video.frames, video.fps)


def test_video_end_to_end(tiny_checkpoint, synth_mp4, tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "video", str(synth_mp4), "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cpu",
        "--score-thresh", "0.0", "--min-track-length", "1", "--max-frames", "6", "--plot-tracks", "1", "--plot-keypoints", "right_knee,nose",
    ])
    assert code == 0
    assert "6 frames" in capsys.readouterr().out
    raw, smoothed = load_tracks(out / "tracks.json"), load_tracks(out / "tracks_smoothed.json")
    assert raw.fps == pytest.approx(10.0) and raw.num_keypoints == 23
    assert [t.id for t in raw.tracks] == [t.id for t in smoothed.tracks]
    assert raw.tracks, "the untrained model with threshold 0 should still yield tracks"
    for track in raw.tracks:
        assert track.frames.max() < 6
    info = probe_video(out / "overlay.mp4")
    assert (info.width, info.height) == (160, 128)
    assert len(list(read_frames(out / "overlay.mp4"))) == 6
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        f"track{raw.tracks[np.argmax([len(t) for t in raw.tracks])].id}_{k}.png" for k in ("nose", "right_knee")
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 6 and summary["device"] == "cpu"
    sigmoid_scores = np.concatenate([t.keypoints[..., 2].ravel() for t in raw.tracks])

    probs = tmp_path / "probs"
    assert main(["video", str(synth_mp4), "--checkpoint", str(tiny_checkpoint), "--out", str(probs), "--device", "cpu",
                 "--score-thresh", "0.0", "--min-track-length", "1", "--max-frames", "6", "--no-render",
                 "--keypoint-probs"]) == 0
    prob_scores = np.concatenate([t.keypoints[..., 2].ravel() for t in load_tracks(probs / "tracks.json").tracks])
    # an untrained head's sigmoid(peak logit) sits near 0.5; its softmax probability is one bin's share of 56 x 56
    assert np.median(sigmoid_scores) > 0.4 and np.median(prob_scores) < 0.01 and prob_scores.min() > 0


def test_video_rejects_unreadable_input(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    code = main(["video", str(bad), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "raypose video: error:" in err and "broken.mp4" in err and "cannot read as a video" in err
    assert main(["video", str(tmp_path / "nope.mp4"), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path)]) == 2
    assert "video not found" in capsys.readouterr().err


def test_video_rejects_unknown_plot_keypoint(tiny_checkpoint, synth_mp4, tmp_path, capsys):
    code = main(["video", str(synth_mp4), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"),
                 "--plot-keypoints", "right_kneecap", "--device", "cpu"])
    assert code == 2 and "right_kneecap" in capsys.readouterr().err


def test_synth_then_smooth(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["video-synth", "--out", str(out), "--frames", "30", "--width", "160", "--height", "128"]) == 0
    assert probe_video(out / "synth.mp4").num_frames in (0, 30)
    assert main(["smooth", str(out / "detections.json"), "--out", str(out / "smoothed.json"), "--outlier-std", "3"]) == 0
    printed = capsys.readouterr().out
    assert "2 tracks" in printed and "outliers replaced" in printed
    truth, noisy, smoothed = (load_tracks(out / n) for n in ("ground_truth.json", "detections.json", "smoothed.json"))
    for before, after in zip(noisy.tracks, smoothed.tracks):
        gt = truth.track(before.id).keypoints[before.frames, :, :2]
        err_before = np.linalg.norm(before.keypoints[..., :2] - gt, axis=-1).mean()
        err_after = np.linalg.norm(after.keypoints[..., :2] - gt, axis=-1).mean()
        assert err_after < err_before


def test_smooth_rejects_malformed_tracks(tmp_path, capsys):
    bad = tmp_path / "tracks.json"
    bad.write_text(json.dumps({"fps": 10, "keypoint_names": ["a"], "tracks": [{"id": 1, "frames": [0, 1],
                                                                                 "keypoints": [[[1, 2, 0.5]]]}]}))
    assert main(["smooth", str(bad), "--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert "raypose smooth: error:" in err and "tracks[0] (id 1)" in err and "one entry per frame" in err
    assert not (tmp_path / "s.json").exists()
    assert main(["smooth", str(bad), "--out", str(tmp_path / "s.json"), "--frac", "0"]) == 2


@pytest.fixture(scope="module")
def synth_tracks(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["video-synth", "--out", str(out), "--frames", "12", "--width", "96", "--height", "80"]) == 0
    return out / "detections.json"


def _blocked_out(tmp_path, kind: str, where: str):
    """An --out of the wrong kind: ``kind`` is what the command expects (file or folder)."""
    blocker = tmp_path / "blocker"
    if kind == "folder":
        blocker.write_text("keep me")
    else:
        blocker.mkdir()
    if where == "under a file":
        (tmp_path / "plain").write_text("keep me")
        return tmp_path / "plain" / "out"
    return blocker


@pytest.mark.parametrize("where", ["wrong kind", "under a file"])
@pytest.mark.parametrize("command", ["video", "smooth", "video-synth"])
def test_out_of_the_wrong_kind_is_refused_before_work(
    tiny_checkpoint, synth_mp4, synth_tracks, tmp_path, capsys, command, where
):
    out = _blocked_out(tmp_path, "file" if command == "smooth" else "folder", where)
    argv = {
        "video": ["video", str(synth_mp4), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"],
        "smooth": ["smooth", str(synth_tracks)],
        "video-synth": ["video-synth", "--frames", "5"],
    }[command]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"raypose {command}: error: --out {out}") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_smooth_out_equal_to_its_input_is_refused(synth_tracks, tmp_path, capsys):
    tracks = tmp_path / "tracks.json"
    tracks.write_bytes(synth_tracks.read_bytes())
    assert main(["smooth", str(tracks), "--out", str(tracks)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert tracks.read_bytes() == synth_tracks.read_bytes()


def test_video_on_cuda_without_cuda_is_refused(tiny_checkpoint, synth_mp4, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["video", str(synth_mp4), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o")]
    assert main([*argv, "--device", "cuda"]) == 2
    assert "CUDA is not available on this machine" in capsys.readouterr().err
    assert main([*argv, "--device", "gpu"]) == 2
    assert "not a device; valid: auto, cpu, cuda or cuda:N" in capsys.readouterr().err
