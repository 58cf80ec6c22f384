"""The ``raypose`` command line: one sub-command module per area, dispatched here.

Each module in :data:`COMMAND_MODULES` has ``register(subparsers)``, which adds its
sub-commands and sets ``func`` (a callable taking the parsed args and returning an exit code).
Heavy imports (torch, ray, mlflow) happen inside those functions, so ``raypose --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from raypose.errors import RayposeError
from raypose.io import DISK_ERRNOS, write_errno_meaning
from raypose.stop_signals import treated_as_ctrl_c

COMMAND_MODULES = (
    "raypose.cli.data",
    "raypose.cli.evaluate",
    "raypose.cli.train",
    "raypose.cli.tune",
    "raypose.cli.analyze",
    "raypose.cli.video",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raypose",
        description="Fine-tune KeypointRCNN on 23 keypoints (COCO + CMU foot) and search its recipe on Ray.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    command = " ".join(filter(None, [args.command, getattr(args, "data_command", None)]))
    try:
        with treated_as_ctrl_c():  # SIGTERM (schedulers, `ray job stop`) and SIGHUP stop as Ctrl-C does
            return int(args.func(args) or 0)
    except RayposeError as e:
        print(f"raypose {command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_ERRNOS:  # only a disk that refused a write no earlier check could foresee
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"raypose {command}: error: {write_errno_meaning(e)}{where}; free space or write elsewhere, then rerun", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"raypose {command}: interrupted{f': {e}' if str(e) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
