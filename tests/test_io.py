"""raypose.io: atomic writes keep the modes a plain open() gives; outputs are checked before work."""

from __future__ import annotations

import json
import os
import stat

import pytest

from raypose.errors import ConfigError
from raypose.io import (
    atomic_path,
    check_output_dir,
    check_output_file,
    current_umask,
    default_mode,
    write_json_atomic,
    write_text_atomic,
)


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


WRITERS = {
    "json": lambda path: write_json_atomic(path, {"a": 1}),
    "text": lambda path: write_text_atomic(path, "hello"),
    "bytes": lambda path: write_bytes_atomic(path, b"\x00\x01"),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_new_files_follow_the_umask_like_open(tmp_path, umask, writer):
    assert current_umask() == umask
    with open(tmp_path / "plain", "w") as f:
        f.write("x")
    WRITERS[writer](tmp_path / "sub" / "atomic")
    assert mode(tmp_path / "sub" / "atomic") == mode(tmp_path / "plain") == 0o666 & ~umask
    assert mode(tmp_path / "sub") == default_mode(directory=True) == 0o777 & ~umask
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["atomic"]  # no temporary file left


@pytest.mark.parametrize("existing_mode", [0o640, 0o604, 0o600])
def test_an_overwritten_file_keeps_its_mode(tmp_path, umask, existing_mode):
    path = tmp_path / "out.json"
    path.write_text("{}")
    os.chmod(path, existing_mode)
    write_json_atomic(path, [1, 2])
    assert json.loads(path.read_text()) == [1, 2]
    assert mode(path) == existing_mode


def test_a_failed_write_leaves_the_old_file_and_its_mode(tmp_path, umask):
    path = tmp_path / "out.txt"
    path.write_text("old")
    os.chmod(path, 0o644)
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old" and mode(path) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_current_umask_does_not_change_it(umask):
    assert current_umask() == umask
    assert os.umask(umask) == umask


def test_output_file_checks(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.json").write_text("[]")
    assert check_output_file(tmp_path / "new" / "deeper" / "x.json") == tmp_path / "new" / "deeper" / "x.json"
    assert check_output_file(tmp_path / "file.json")  # overwriting an output is fine
    with pytest.raises(ConfigError, match=r"--out .*folder: is a folder; --out names the file"):
        check_output_file(tmp_path / "folder")
    with pytest.raises(ConfigError, match=r"file.json is a file, not a folder"):
        check_output_file(tmp_path / "file.json" / "x.json")
    with pytest.raises(ConfigError, match=r"file.json is a file, not a folder"):
        check_output_file(tmp_path / "file.json" / "a" / "b" / "x.json", option="--report")


def test_output_file_may_not_be_an_input(tmp_path, monkeypatch):
    source = tmp_path / "in.json"
    source.write_text("[]")
    (tmp_path / "link.json").symlink_to(source)
    monkeypatch.chdir(tmp_path)
    for same in (source, "in.json", "./in.json", tmp_path / "link.json", tmp_path / "sub" / ".." / "in.json"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(ConfigError, match="is also an input"):
            check_output_file(same, inputs=(None, source))
    check_output_file("other.json", inputs=(source, None))
    assert source.read_text() == "[]"


def test_output_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert check_output_dir(tmp_path)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "sub")
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        with pytest.raises(ConfigError, match="permission denied"):
            check_output_dir(locked / "out")
        with pytest.raises(ConfigError, match="permission denied"):
            check_output_file(locked / "out.json")
    finally:
        os.chmod(locked, 0o700)


def test_a_file_system_that_refuses_chmod_still_gets_the_file(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 5000 + "1" + "}" * 5000])
def test_deeply_nested_json_is_refused_naming_the_file(tmp_path, text):
    from raypose.errors import InputError
    from raypose.io import load_json

    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(InputError, match=r"deep.json: .*nested deeper than \d+ levels"):
        load_json(path)


def test_check_output_dir_refuses_an_input_at_a_written_name(tmp_path):
    from raypose.io import check_output_dir

    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    for name in ("summary.json", "plots/a.png", "keep.json", "deep/x/y.txt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("input")
    writes = ("summary.json", "plots/*.png", "deep/**")
    for name in ("summary.json", "plots/a.png", "deep/x/y.txt"):
        with pytest.raises(ConfigError, match=rf"writes {name} there, and that is the input {out / name}"):
            check_output_dir(out, inputs=(out / name,), writes=writes)
    assert check_output_dir(out, inputs=(out / "keep.json", None), writes=writes) == out
    assert check_output_dir(tmp_path / "new", inputs=(out / "summary.json",), writes=writes) == tmp_path / "new"


def test_check_output_dir_sees_through_links(tmp_path):
    from raypose.io import check_output_dir

    real = tmp_path / "real"
    real.mkdir()
    (real / "summary.json").write_text("input")
    (tmp_path / "link").symlink_to(real)  # --out names the folder through a link
    with pytest.raises(ConfigError, match="writes summary.json there"):
        check_output_dir(tmp_path / "link", inputs=(real / "summary.json",), writes=("summary.json",))
    with pytest.raises(ConfigError, match="is also an input"):
        check_output_dir(tmp_path / "link", inputs=(real,), writes=("summary.json",))
