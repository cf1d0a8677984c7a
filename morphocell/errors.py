"""The one exception family of morphocell.

Every error a user can cause (a bad file, a bad model, a bad argument) is a
:class:`MorphocellError`; messages name the file (when there is one) and what was wrong.
"""
from __future__ import annotations

import os

__all__ = [
    "MorphocellError",
    "ImageReadError",
    "SegmentationError",
    "FeatureError",
    "ModelFileError",
    "DataError",
]


class MorphocellError(Exception):
    """Base class of every error raised on purpose by morphocell."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class ImageReadError(MorphocellError):
    """An image could not be read: missing, empty, corrupt, not an image, too small/large."""


class SegmentationError(MorphocellError):
    """Segmentation could not run (bad input array, unknown method, bad model)."""


class FeatureError(MorphocellError):
    """Features could not be computed (bad masks, unknown family or feature name)."""


class ModelFileError(MorphocellError):
    """A model file is missing, corrupt, tampered with, or from an incompatible version."""


class DataError(MorphocellError):
    """A dataset folder or manifest is unusable (no classes, missing columns, ...)."""
