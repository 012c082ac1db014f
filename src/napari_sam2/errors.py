"""The package's exceptions: one base class every error napari-sam2 raises descends from.

A script catches ``NapariSam2Error`` for "anything napari-sam2 refused or could not do";
each class also keeps the built-in base callers already catch (``except ValueError`` goes on
working). This module imports nothing, so every layer (model, engine, plugin, cli) may use it.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "CapacityError",
    "FileError",
    "InputError",
    "InputTypeError",
    "MissingDependencyError",
    "MissingFileError",
    "NapariSam2Error",
    "NotAFolderError",
    "NotWritableError",
    "OutOfRangeError",
    "StateError",
    "UnknownKeyError",
]


class NapariSam2Error(Exception):
    """Base of every error napari-sam2 raises."""


class InputError(NapariSam2Error, ValueError):
    """A value given to napari-sam2 is not acceptable; the message says which and what to do."""


class InputTypeError(NapariSam2Error, TypeError):
    """A value of the wrong kind was given (for example a file name where an image is expected)."""


class StateError(NapariSam2Error, RuntimeError):
    """The operation cannot run in the current state (no image set, no session open, ...)."""


class MissingFileError(NapariSam2Error, FileNotFoundError):
    """A file or folder napari-sam2 was asked to read does not exist."""


class AlreadyExistsError(NapariSam2Error, FileExistsError):
    """An output exists and replacing it was not asked for."""


class NotAFolderError(NapariSam2Error, NotADirectoryError):
    """A path that must be a folder is a file."""


class NotWritableError(NapariSam2Error, PermissionError):
    """A path napari-sam2 must write to is not writable."""


class FileError(NapariSam2Error, OSError):
    """A file could not be read or written."""


class UnknownKeyError(NapariSam2Error, KeyError):
    """A name (variant, object id, channel, ...) that napari-sam2 does not know."""

    def __str__(self) -> str:  # KeyError's str() would show the message in quotes
        return str(self.args[0]) if self.args else ""


class OutOfRangeError(NapariSam2Error, IndexError):
    """An index (frame, channel, object) outside what exists."""


class MissingDependencyError(NapariSam2Error, ImportError):
    """An optional library a feature needs is not installed; the message names the pip command."""


class CapacityError(NapariSam2Error, OverflowError):
    """A value does not fit (for example more objects than the label type can hold)."""
