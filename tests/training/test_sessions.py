"""LocalSession's run folder: metrics.jsonl as a crash or a full disk leaves it."""

from __future__ import annotations

import json
import logging

import pytest

from raypose.errors import InputError
from raypose.training.sessions import LocalSession


def run_with_checkpoints(tmp_path, epochs: int):
    """A run folder with a checkpoint per epoch, each holding the history up to its epoch."""
    import torch

    from raypose.checkpoint import FORMAT

    run_dir = tmp_path / "run"
    history = []
    for epoch in range(1, epochs + 1):
        history.append({"epoch": epoch, "oks_map": epoch / 10})
        folder = run_dir / "checkpoints" / f"epoch_{epoch:04d}"
        folder.mkdir(parents=True)
        torch.save({"format": FORMAT, "epoch": epoch, "history": list(history)}, folder / "checkpoint.pth")
    return run_dir


def test_a_partial_last_metrics_line_is_dropped_with_a_warning_and_restored(tmp_path, caplog):
    """Killed (or out of disk) while epoch 2's line was appended, after its checkpoint was stored."""
    run_dir = run_with_checkpoints(tmp_path, 2)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "oks_map": 0.1}\n{"epoch": 2, "oks_ma')  # the append cut short
    with caplog.at_level(logging.INFO):
        session = LocalSession(run_dir, keep=2)
    assert f"{metrics}: line 2 is cut short" in caplog.text and "dropped" in caplog.text
    assert metrics.read_text().splitlines() == [
        '{"epoch": 1, "oks_map": 0.1}',
        '{"epoch": 2, "oks_map": 0.2}',
    ]
    session.report({"epoch": 3, "oks_map": 0.3}, None)  # the resumed run goes on
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


def test_a_partial_line_past_the_last_checkpoint_is_dropped(tmp_path):
    run_dir = run_with_checkpoints(tmp_path, 1)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "oks_map": 0.1}\n{"epo')
    LocalSession(run_dir)
    assert metrics.read_text() == '{"epoch": 1, "oks_map": 0.1}\n'


def test_an_unparseable_metrics_line_in_the_middle_is_an_input_error(tmp_path):
    run_dir = run_with_checkpoints(tmp_path, 3)
    metrics = run_dir / "metrics.jsonl"
    text = '{"epoch": 1}\n{"epoch": 2, \n{"epoch": 3}\n'
    metrics.write_text(text)
    with pytest.raises(InputError) as err:
        LocalSession(run_dir)
    message = str(err.value)
    assert str(metrics) in message and "line 2" in message and "not valid JSON" in message
    assert metrics.read_text() == text  # untouched


def test_a_metrics_line_without_an_epoch_is_an_input_error(tmp_path):
    run_dir = run_with_checkpoints(tmp_path, 1)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n[1, 2]\n{"epoch": 1}\n')
    with pytest.raises(InputError, match=r"line 2 is not a metrics object with an .epoch"):
        LocalSession(run_dir)
