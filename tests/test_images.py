"""Image decoding: every mode and bit depth becomes the 8-bit RGB a viewer would show, or an InputError."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raypose.errors import InputError
from raypose.images import read_rgb, read_rgb_tensor, to_rgb


def gray_gradient(height: int = 40, width: int = 48) -> np.ndarray:
    """An 8-bit gray ramp (H, W) uint8 running over 0..255 along x, shifted along y."""
    y, x = np.mgrid[:height, :width]
    return ((x * 255 // (width - 1) + 3 * y) % 256).astype(np.uint8)


def save_gray16(path: Path, gray8: np.ndarray, seed: int = 0) -> Path:
    """A 16-bit grayscale PNG of ``gray8``: ``v * 256`` plus a random low byte, so only a decoder that
    scales by the bit depth gets ``v`` back (one that clips gives white, one that keeps the low byte noise)."""
    low = np.random.default_rng(seed).integers(0, 256, gray8.shape)
    Image.fromarray((gray8.astype(np.uint16) * 256 + low).astype(np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16", im.mode  # what Pillow makes of a 16-bit grayscale PNG
    return path


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG written byte by byte (Pillow cannot write 48- or 64-bit PNGs): ``pixels``
    (H, W) gray, (H, W, 2) gray + alpha, (H, W, 3) RGB or (H, W, 4) RGBA, uint16."""
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[1 if pixels.ndim == 2 else pixels.shape[2]]
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def _gray(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image, dtype=np.int16)
    assert image.mode == "RGB" and rgb.dtype == np.int16 and rgb.shape[2] == 3
    return rgb


def test_a_16bit_gray_png_decodes_to_its_8bit_gradient(tmp_path):
    gray = gray_gradient()
    rgb = _gray(read_rgb(save_gray16(tmp_path / "g.png", gray)))
    assert np.abs(rgb - gray[..., None]).max() <= 1


def test_48_and_64_bit_pngs_keep_their_high_bytes(tmp_path):
    gray = gray_gradient()
    ramp = gray.astype(np.uint16) * 257
    rgb16 = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 30000)], -1)
    alpha = np.full_like(ramp, 65535)
    expected = np.stack([gray, gray[:, ::-1], np.full_like(gray, 30000 >> 8)], -1)
    for name, pixels, want in [
        ("rgb48.png", rgb16, expected),
        ("rgba64.png", np.concatenate([rgb16, alpha[..., None]], -1), expected),
        ("gray_alpha32.png", np.stack([ramp, alpha], -1), np.repeat(gray[..., None], 3, -1)),
    ]:
        rgb = _gray(read_rgb(write_png16(tmp_path / name, pixels)))
        assert np.abs(rgb - want).max() <= 1, name


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("name", "make", "kwargs"),
    [
        ("bilevel.png", lambda g: Image.fromarray(g >= 128), {}),
        ("gray.png", lambda g: Image.fromarray(g), {}),
        ("gray_alpha.png", lambda g: Image.fromarray(np.stack([g, 255 - g], -1), "LA"), {}),
        ("palette.png", lambda g: Image.fromarray(g).convert("P"), {}),
        ("palette_transparent.png", lambda g: Image.fromarray(g).convert("P"), {"transparency": 0}),
        ("palette_transparent.gif", lambda g: Image.fromarray(g).convert("P"), {"transparency": 0}),
        ("rgba.png", lambda g: Image.fromarray(np.stack([g, g, g, 255 - g], -1), "RGBA"), {}),
        ("cmyk.tif", lambda g: Image.fromarray(np.repeat(g[..., None], 3, -1)).convert("CMYK"), {}),
        ("rgb.jpg", lambda g: Image.fromarray(np.repeat(g[..., None], 3, -1)), {"quality": 100}),
        ("uint16_big_endian.tif", lambda g: Image.fromarray(g.astype(">u2") * 257), {}),
    ],
)
def test_every_8bit_mode_decodes_to_the_gray_it_shows(tmp_path, name, make, kwargs):
    """Alpha and transparency are dropped (as torchvision and OpenCV do): the stored gray comes out."""
    gray = gray_gradient()
    path = _save(tmp_path / name, make(gray), **kwargs)
    want = np.where(gray >= 128, 255, 0) if name.startswith("bilevel") else gray
    tolerance = 2 if name.endswith(".jpg") else 1
    assert np.abs(_gray(read_rgb(path)) - want[..., None]).max() <= tolerance


def test_a_16bit_pgm_opened_as_32bit_integers_is_scaled_from_16_bits(tmp_path):
    gray = gray_gradient()
    pixels = gray.astype(">u2") * 257
    path = tmp_path / "g.pgm"
    path.write_bytes(f"P5 {gray.shape[1]} {gray.shape[0]} 65535\n".encode() + pixels.tobytes())
    with Image.open(path) as im:
        assert im.mode == "I"
    assert np.abs(_gray(read_rgb(path)) - gray[..., None]).max() <= 1


@pytest.mark.parametrize(
    ("name", "pixels", "mode"),
    [
        ("float.tif", gray_gradient().astype(np.float32) / 255, "mode F"),
        ("int32.tif", gray_gradient().astype(np.int32) * 1000, "mode I (32-bit)"),
    ],
)
def test_pixels_without_an_8bit_form_are_refused_naming_the_file_and_the_fix(tmp_path, name, pixels, mode):
    path = _save(tmp_path / name, Image.fromarray(pixels))
    before = path.read_bytes()
    with pytest.raises(InputError) as caught:
        read_rgb(path, "image id 3 in train.json")
    message = str(caught.value)
    assert message.startswith(f"{path} (image id 3 in train.json): {mode}")
    assert "convert it to 8-bit RGB" in message and "-depth 8" in message
    assert path.read_bytes() == before


def test_in_memory_images_convert_the_same_way():
    gray = gray_gradient()
    assert np.abs(_gray(to_rgb(Image.fromarray(gray.astype(np.uint16) * 257))) - gray[..., None]).max() <= 1
    ycbcr = Image.fromarray(np.repeat(gray[..., None], 3, -1)).convert("YCbCr")
    assert np.abs(_gray(to_rgb(ycbcr)) - gray[..., None]).max() <= 1
    with pytest.raises(InputError, match=r"^image: mode F"):
        to_rgb(Image.fromarray(gray.astype(np.float32)))
    with pytest.raises(InputError, match=r"^image: mode HSV pixels have no faithful 8-bit RGB form"):
        to_rgb(Image.new("HSV", (4, 4)))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-60])


def _not_an_image(path: Path) -> None:
    path.write_bytes(b"this is not a PNG" * 10)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage", [_truncated, _not_an_image, _empty, _folder])
def test_a_file_that_does_not_decode_is_an_input_error_naming_it(tmp_path, damage):
    path = save_gray16(tmp_path / "g.png", gray_gradient())
    damage(path)
    with pytest.raises(InputError) as caught:
        read_rgb(path, "image id 3 in train.json")
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot read image (image id 3 in train.json): ")
    assert "export or download it again" in message and "\n" not in message


def test_a_missing_file_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=r"x\.png: image file not found; check the folder and the file name"):
        read_rgb(tmp_path / "x.png")


def test_read_rgb_tensor_is_the_rgb_image_in_0_1(tmp_path):
    gray = gray_gradient()
    tensor = read_rgb_tensor(save_gray16(tmp_path / "g.png", gray))
    assert tensor.dtype == torch.float32 and tensor.shape == (3, *gray.shape)
    assert (tensor * 255 - torch.from_numpy(gray).float()).abs().max().item() <= 1 + 1e-4
