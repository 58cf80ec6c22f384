"""Sub-commands of this area (filled in by the issue that builds it)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the ``raypose`` parser."""
