"""SIGTERM and SIGHUP stop raypose as Ctrl-C does.

Schedulers stop a job with SIGTERM (``ray job stop``, Kubernetes, Slurm) and a closed terminal
sends SIGHUP; Python's default for both is to die on the spot, leaving the MLflow run RUNNING
and temporary checkpoint folders behind. Here both go to whatever handles SIGINT at that
moment: Python's own (a ``KeyboardInterrupt``, which ends the MLflow run KILLED and removes
temporary files on its way out), or Ray Tune's and Ray Train's, which stop their run
gracefully and save its state. ``ray.init`` installs a SIGTERM handler of its own (``sys.exit``):
:func:`reinstall_after_ray` puts this one back. Standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

_installed = False


def as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    """The handler of :data:`STOP_SIGNALS`: do what SIGINT's handler does now."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # Tune's or Train's: they stop their run and save its state
    else:  # Python's, or SIGINT ignored (a background job): a stop request still stops
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def treated_as_ctrl_c() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGHUP are handled by :func:`as_ctrl_c`; the previous
    handlers come back after it. Outside the main thread (where Python cannot set handlers) it
    changes nothing."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, as_ctrl_c)
    _installed = True
    try:
        yield
    finally:
        _installed = False
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def reinstall_after_ray() -> None:
    """After ``ray.init``: put :func:`as_ctrl_c` back where :func:`treated_as_ctrl_c` holds
    (Ray's driver replaces SIGTERM's handler with ``sys.exit``, which Tune reports as a crash)."""
    if _installed and threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, as_ctrl_c)
