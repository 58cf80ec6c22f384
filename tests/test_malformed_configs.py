"""Every command that reads a YAML file refuses every kind of malformed one the same way: exit
code 2, one message naming the file, no traceback, nothing written and the file untouched.

The table of commands is checked against the parser: a new command that takes a config or a
search space must be added to :data:`COMMANDS` (with how to call it), one that reads no YAML
listed as such, or :func:`test_every_command_is_in_the_table` fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from raypose.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]

# command -> (the kind of YAML file it reads, its arguments around FILE); None: reads no YAML
COMMANDS: dict[str, tuple[str, list[str]] | None] = {
    "train": ("config", ["train", "FILE"]),
    "train --local": ("config", ["train", "FILE", "--local"]),
    "overfit": ("config", ["overfit", "FILE", "--epochs", "1"]),
    "tune": ("space", ["tune", "FILE"]),
    "submit": ("space", ["submit", "FILE", "--address", "http://127.0.0.1:9", "--no-wait"]),
    "data merge-foot": None,
    "data synth": None,
    "data prepare": None,
    "data stats": None,
    "data show": None,
    "data check": None,
    "eval": None,
    "predict": None,
    "analyze": None,
    "video": None,
    "smooth": None,
    "video-synth": None,
}

TINY_CPU = (REPO / "configs" / "tiny_cpu.yaml").read_text()
NESTED = "[" * 2000 + "]" * 2000

# name -> (file name, contents) for each kind of file; base.yaml is written beside every space
BAD_CONFIGS: dict[str, tuple[str, bytes | str]] = {
    "duplicate section": ("cfg.yaml", TINY_CPU + "optim:\n  weight_decay: 0.05\n"),
    "duplicate nested key": ("cfg.yaml", "optim:\n  lr: 0.1\n  lr: 0.2\n"),
    "duplicate scalar": ("cfg.yaml", "epochs: 3\nbatch_size: 2\nepochs: 5\n"),
    "latin-1 comment": ("cfg.yaml", "epochs: 3\n# r\xe9glages\n".encode("latin-1")),
    "binary checkpoint": ("model.pth", b"PK\x03\x04\x14\x00\x08\x00" + bytes(range(256)) * 8),
    "list top level": ("cfg.yaml", "- epochs: 3\n- batch_size: 2\n"),
    "string top level": ("cfg.yaml", "epochs 3\n"),
    "number top level": ("cfg.yaml", "42\n"),
    "deep nesting": ("cfg.yaml", f"activation_stats: {NESTED}\n"),
    "syntax error": ("cfg.yaml", "optim: {lr: 0.1\nepochs: 3\n"),
    "huge number": ("cfg.yaml", "optim: {lr: 1e400}\n"),
    "inf": ("cfg.yaml", "cpus_per_worker: .inf\n"),
    "section as a list": ("cfg.yaml", "optim:\n  - name: sgd\n"),
    "section as a number": ("cfg.yaml", "data: 3\n"),
    "scale_range zero": ("cfg.yaml", "data: {scale_range: [0, 0]}\n"),
    "run name escaping": ("cfg.yaml", "name: ../../escaped\n"),
}
BAD_SPACES: dict[str, tuple[str, bytes | str]] = {
    "duplicate search key": (
        "space.yaml",
        "base: base.yaml\nsearch:\n  optim.lr: {choice: [0.1]}\n  optim.lr: {choice: [0.2]}\n",
    ),
    "duplicate section": ("space.yaml", "base: base.yaml\ntune: {num_samples: 4}\ntune: {seed: 1}\n"),
    "latin-1 comment": (
        "space.yaml",
        "base: base.yaml\n# espace de recherche \xe0 tester\n".encode("latin-1"),
    ),
    "binary checkpoint": ("model.pth", b"PK\x03\x04\x14\x00\x08\x00" + bytes(range(256)) * 8),
    "list top level": ("space.yaml", "- base: base.yaml\n"),
    "string top level": ("space.yaml", "search_spaces/quickstart.yaml\n"),
    "deep nesting": ("space.yaml", f"base: base.yaml\nsearch:\n  optim.lr: {{choice: {NESTED}}}\n"),
    "syntax error": ("space.yaml", "base: base.yaml\nsearch:\n  optim.lr: {choice: [0.1}\n"),
    "huge number": ("space.yaml", "base: base.yaml\ntune: {trial_cpus: 1e400}\n"),
    "inf": ("space.yaml", "base: base.yaml\ntune: {trial_cpus: .inf}\n"),
    "search as a list": ("space.yaml", "base: base.yaml\nsearch:\n  - optim.lr: {choice: [0.1]}\n"),
    "search as a string": ("space.yaml", "base: base.yaml\nsearch: optim.lr\n"),
    "tune as a number": ("space.yaml", "base: base.yaml\ntune: 5\n"),
    "when that never holds": (
        "space.yaml",
        "base: base.yaml\nsearch:\n  optim.name: {choice: [sgd, adamw]}\n"
        "  optim.momentum: {uniform: [0.8, 0.9], when: {optim.name: SGD}}\n",
    ),
    "run name searched": ("space.yaml", "base: base.yaml\nsearch:\n  name: {choice: [a, b]}\n"),
    "study name escaping": ("space.yaml", "base: base.yaml\ntune: {name: ../../escaped}\n"),
    "bad base file": ("space.yaml", "base: bad_base.yaml\n"),
}
BASE = "epochs: 1\nmodel: {backbone: resnet18, weights: null, backbone_weights: null}\nmlflow: {enabled: false}\n"
BAD_BASE = "epochs: 1\nepochs: 2\n"  # the file a "bad base file" space names: the message names it


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """``{"train": parser, "data synth": parser, ...}``: every command a user can run."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix: parser}
    out = {}
    for name, sub in subs[0].choices.items():
        out.update(leaf_commands(sub, f"{prefix} {name}".strip()))
    return out


def reads_yaml(parser: argparse.ArgumentParser) -> bool:
    """Whether a command takes a config or search space file (by its arguments' names and help)."""
    return any(a.dest in ("config", "space") or "yaml" in (a.help or "").lower() for a in parser._actions)


def test_every_command_is_in_the_table():
    commands = leaf_commands(build_parser())
    table = {name.split(" --")[0] for name in COMMANDS}
    assert set(commands) == table, "add the new command to COMMANDS (None when it reads no YAML)"
    for name, parser in commands.items():
        listed = [kind for key, kind in COMMANDS.items() if key.split(" --")[0] == name]
        assert reads_yaml(parser) == any(listed), f"{name}: reads a YAML file: give it a kind and arguments"


CASES = [
    (command, file_name)
    for command, entry in COMMANDS.items()
    if entry is not None
    for file_name in (BAD_CONFIGS if entry[0] == "config" else BAD_SPACES)
]


@pytest.mark.parametrize(("command", "case"), CASES)
def test_a_malformed_file_exits_2_naming_it(command, case, tmp_path, monkeypatch, capsys):
    kind, argv = COMMANDS[command]
    file_name, contents = (BAD_CONFIGS if kind == "config" else BAD_SPACES)[case]
    monkeypatch.chdir(tmp_path)  # anything a command wrote would land here
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "bad_base.yaml").write_text(BAD_BASE)
    path = tmp_path / file_name
    path.write_bytes(contents.encode() if isinstance(contents, str) else contents)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}

    code = main([str(path) if a == "FILE" else a for a in argv])

    out, err = capsys.readouterr()
    named = tmp_path / "bad_base.yaml" if case == "bad base file" else path
    assert code == 2, out + err
    assert err.startswith(f"raypose {argv[0]}: error: ") and str(named) in err, err
    assert "Traceback" not in out + err
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # input untouched, nothing written


def test_a_real_process_exits_2_without_a_traceback(tmp_path):
    # one process only: importing torch for the config models takes seconds
    path = tmp_path / "space.pth"
    path.write_bytes(BAD_SPACES["binary checkpoint"][1])
    proc = subprocess.run(
        [sys.executable, "-m", "raypose", "tune", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
