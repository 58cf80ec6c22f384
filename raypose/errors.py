"""Exceptions raypose raises for problems the user can fix.

The CLI turns any :class:`RayposeError` into one message on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RayposeError(Exception):
    """Base class: a problem with the user's input, files or configuration."""


class InputError(RayposeError):
    """A bad input file: missing, malformed, or inconsistent. The message names the file and id."""


class ConfigError(RayposeError):
    """A bad configuration value: the message names the key and the valid choices."""


class WeightsError(RayposeError):
    """Pretrained weights cannot be found or do not fit the model."""


class TrainingError(RayposeError):
    """Training cannot go on (for example a non-finite loss)."""


class OutputError(RayposeError):
    """A file or folder raypose writes cannot be written: the disk is full, read-only or over its
    quota. The message names the folder, the reason in words and the fix."""


class Interrupted(KeyboardInterrupt):
    """The user stopped a long run (Ctrl-C); its state is saved. The message says how to resume."""
