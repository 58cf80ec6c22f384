"""Decoding image files to 8-bit RGB: the one place raypose turns image bytes into pixels.

Pillow's ``convert("RGB")`` clips 16- and 32-bit pixels to 0..255 instead of scaling them (a
16-bit PNG turns white), so every image goes through :func:`to_rgb`, which converts by mode and
bit depth and refuses what has no meaningful 8-bit form. Alpha is dropped, not composited, as
torchvision's ``decode_image(..., ImageReadMode.RGB)`` and OpenCV's ``imread`` do. EXIF
orientation is not applied: COCO annotations are in the stored pixel grid.

Pure PIL and numpy (torch is imported only by :func:`read_rgb_tensor`), so drawing code can use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from raypose.errors import InputError

if TYPE_CHECKING:
    import torch

# Modes Pillow's convert("RGB") maps faithfully; those with alpha lose it.
CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Formats whose 32-bit integer ("I") images hold 16-bit values: Pillow scales a PGM's maxval to 65535.
SIXTEEN_BIT_INT_FORMATS = frozenset({"PNG", "PPM"})
CONVERT_HINT = "convert it to 8-bit RGB, e.g. with ImageMagick: `convert IN -depth 8 -type TrueColor OUT.png`"


def read_rgb(path: str | os.PathLike, context: str | None = None) -> Image.Image:
    """Decode an image file completely into a new 8-bit RGB PIL image (see :func:`to_rgb`).

    ``context`` says what the image is for the error message (``"image id 3 in train.json"``).

    Raises:
        InputError: the file is missing, truncated, corrupt or not an image, or its pixels have
            no 8-bit RGB form; the message names the file, the context and the fix.
    """
    path = Path(path)
    where = f" ({context})" if context else ""
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise InputError(f"{path}: image file not found{where}; check the folder and the file name") from None
    except Exception as e:  # Pillow's plugins raise OSError, SyntaxError, ValueError, ... on bad bytes
        raise _unreadable(path, where, e) from None
    with image:
        try:
            image.load()  # decode every byte now: a truncated file fails here, not half-way into training
        except Exception as e:  # as above
            raise _unreadable(path, where, e) from None
        return to_rgb(image, f"{path}{where}")


def read_rgb_tensor(path: str | os.PathLike, context: str | None = None) -> torch.Tensor:
    """:func:`read_rgb` as a float32 tensor (3, H, W) in [0, 1].

    Raises:
        InputError: as :func:`read_rgb`.
    """
    import torch

    array = np.asarray(read_rgb(path, context), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _unreadable(path: Path, where: str, error: Exception) -> InputError:
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return InputError(
        f"{path}: cannot read image{where}: {reason}; the file is truncated, corrupt or not an image: "
        "export or download it again"
    )


def to_rgb(image: Image.Image, source: str = "image") -> Image.Image:
    """A new 8-bit RGB copy of a decoded PIL image, converted by its mode and bit depth.

    16-bit gray (``I;16*``, and ``I`` from PNG / PGM, or from a TIFF of at most 16 bits per
    sample) keeps its top 8 bits; 48- and 64-bit PNGs are already reduced so by Pillow. ``source``
    names the image in the error.

    Raises:
        InputError: float pixels (``F``: no standard range to scale from), integers wider than 16
            bits or signed, and modes without a faithful RGB form (``LAB``, ``HSV``, ...).
    """
    mode = image.mode
    if mode in CONVERTIBLE_MODES:
        return image.convert("RGB")
    if mode in UINT16_MODES or mode == "I":
        return _scaled_gray(image, source)
    if mode == "F":
        raise InputError(
            f"{source}: mode F (32-bit float pixels) has no standard range to scale to 0..255; {CONVERT_HINT}"
        )
    raise InputError(f"{source}: mode {mode} pixels have no faithful 8-bit RGB form; {CONVERT_HINT}")


def _scaled_gray(image: Image.Image, source: str) -> Image.Image:
    """An integer gray image (``I;16*`` or ``I``) scaled from its bit depth to 8-bit RGB."""
    bits = _bits_per_sample(image)
    if bits is None or bits > 16:
        depth = f"{bits}-bit" if bits else "32-bit integer pixels of unknown depth"
        raise InputError(
            f"{source}: mode {image.mode} ({depth}) has no standard range to scale to 0..255; {CONVERT_HINT}"
        )
    values = np.asarray(image).astype(np.int64)  # I;16B arrives big-endian, I as int32
    if values.size and values.min() < 0:
        raise InputError(f"{source}: mode {image.mode} with negative (signed) pixels; {CONVERT_HINT}")
    gray = np.minimum(values >> max(bits - 8, 0), 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _bits_per_sample(image: Image.Image) -> int | None:
    """Bits per sample of an integer gray image: TIFF's BitsPerSample tag, else what the mode or format implies."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:  # TIFF BitsPerSample: 12-bit data in I;16 must scale by 2**4
        sample_bits = tags[258]
        return int(sample_bits[0] if isinstance(sample_bits, tuple) else sample_bits)
    if image.mode in UINT16_MODES or image.format in SIXTEEN_BIT_INT_FORMATS:
        return 16
    return None
