"""The one exception family of morphocell.

Every error a user can cause (a bad file, a bad model, a bad argument) is a
:class:`MorphocellError`; messages name the file (when there is one) and what was wrong.
"""
from __future__ import annotations

import os

__all__ = [
    "DataError",
    "FeatureError",
    "ImageReadError",
    "ModelFileError",
    "MorphocellError",
    "SegmentationError",
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
    """A model file is missing, not a model file, oversized (a ZIP bomb), corrupt, tampered
    with (a checksum mismatch, or a header that does not describe the model it holds), holds
    an untrusted type, or is from an incompatible version. The command line exits with 2."""


class DataError(MorphocellError):
    """A dataset folder or manifest is unusable: nothing to list, a folder that mixes images
    and subfolders without a chosen layout, an empty class folder or a missing label when
    training, a manifest without a ``path`` column, ... The command line exits with 2."""
