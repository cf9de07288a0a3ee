"""Typed errors. Every fatal problem a user can fix has its own class and a message that
says what to do; callers at the command line print the message, never a traceback."""

from __future__ import annotations


class FacerecError(Exception):
    """Base class of every error facerec raises on purpose."""


class ConfigError(FacerecError):
    """The configuration file or a command-line option is invalid."""


class UnknownModelError(FacerecError, KeyError):
    """A model name is not in the registry. The message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(FacerecError):
    """Base class of problems with a weights file."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No file for a model's weights was found on any search path."""


class WeightsChecksumError(WeightsError):
    """A weights file was found but its sha256 differs from the published one."""


class CheckpointError(WeightsError):
    """A checkpoint loaded but does not fit the model (missing/unexpected keys, shapes)."""


class ImageReadError(FacerecError):
    """An image file could not be decoded (empty, truncated, not an image, too large)."""


class SourceError(FacerecError):
    """A video source could not be opened or stopped delivering frames."""


class GalleryError(FacerecError):
    """The gallery store refused an operation (unknown person, bad name, wrong embedder)."""
