"""Errors that carry enough context for a user to fix their input.

Every error names the file (and, where there is one, the field or value) it is about. The CLI
turns them into a one-line message on stderr and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class OmniR1Error(Exception):
    """Base class of the errors the CLI reports without a traceback."""

    exit_code = 2


class InputError(OmniR1Error):
    """A file, field or value supplied by the user is missing or malformed."""

    def __init__(self, path: str | Path | None, message: str, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.message = message
        where = self.path or "<input>"
        if field:
            where = f"{where}: {field}"
        super().__init__(f"{where}: {message}")


class DataError(InputError):
    """A data set does not follow its declared format."""


class MediaError(InputError):
    """A video, audio file or frame folder cannot be read."""


class ConfigError(InputError):
    """params.yaml or a CLI option holds an invalid value."""
