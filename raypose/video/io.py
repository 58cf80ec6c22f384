"""Video files with PyAV: decode frames as RGB arrays, encode an MP4 atomically.

Frames are numpy arrays (H, W, 3) uint8 RGB. Encoding uses H.264 (``libx264``) when FFmpeg has
it, else MPEG-4 Part 2 (``mpeg4``), in ``yuv420p``, which needs even sizes: odd frames are padded
by one pixel (edge colour) on the right / bottom.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from raypose.errors import InputError
from raypose.io import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself; ``num_frames`` is 0 when the container does not know."""

    path: Path
    fps: float
    width: int
    height: int
    num_frames: int


def _open(path: Path):
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read as a video (PyAV/FFmpeg: {e}); is it a video file?") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: has no video stream")
    return container


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, size and (if known) frame count of a video.

    Raises:
        InputError: missing file, not a video, or no video stream.
    """
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        return VideoInfo(path, fps, stream.codec_context.width, stream.codec_context.height, int(stream.frames or 0))
    finally:
        container.close()


def read_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video's frames in order as (H, W, 3) uint8 RGB arrays.

    Raises:
        InputError: missing file, not a video, no video stream, or corrupt data mid-way (the
            message says how many frames decoded).
    """
    path = Path(path)
    container = _open(path)
    count = 0
    try:
        for frame in container.decode(video=0):
            if max_frames is not None and count >= max_frames:
                break
            yield frame.to_ndarray(format="rgb24")
            count += 1
    except av.FFmpegError as e:
        raise InputError(f"{path}: video data is corrupt after {count} frames (PyAV/FFmpeg: {e})") from None
    finally:
        container.close()
    if count == 0:
        raise InputError(f"{path}: the video stream has no decodable frames")


def pick_codec() -> str:
    """``libx264`` if this FFmpeg build has it, else ``mpeg4``."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str | os.PathLike, frames, fps: float, crf: int = 23) -> Path:
    """Encode frames ((H, W, 3) uint8 RGB, all the same size) to an MP4 at ``path``, atomically.

    Args:
        frames: any iterable of frames; consumed once, so a generator streams.
        fps: frames per second (rounded to 1/1000).

    Raises:
        ValueError: no frames, or frames of different sizes.
    """
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = _even(np.ascontiguousarray(frame, dtype=np.uint8))
                if stream is None:
                    stream = _add_stream(container, frame.shape, fps, crf)
                elif (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                    raise ValueError(f"frame {count} is {frame.shape[:2]}, earlier frames {(stream.height, stream.width)}")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError(f"no frames to write to {path}")
            for packet in stream.encode():
                container.mux(packet)
    log.info("wrote %s (%d frames, %s)", path, count, pick_codec())
    return path


def _add_stream(container, shape: tuple[int, ...], fps: float, crf: int):
    codec = pick_codec()
    stream = container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
    stream.height, stream.width = shape[0], shape[1]
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": str(crf), "preset": "veryfast"}
    else:
        stream.bit_rate = 2_000_000
    return stream
