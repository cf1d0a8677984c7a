"""Input checks shared by the stain, scale and augmentation modules."""
from __future__ import annotations

import numpy as np

from ..errors import MorphocellError


class StainNormalizationError(MorphocellError):
    """Stain or scale normalisation could not run (bad image, bad target, too few pixels)."""


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise StainNormalizationError(f"expected an HxWx3 uint8 RGB image, got shape "
                                      f"{img.shape} dtype {img.dtype}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise StainNormalizationError(f"image of shape {img.shape} is too small")
    return img


def _check_vec(v, name: str, positive: bool = False) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)) or (positive and np.any(a <= 0)):
        raise StainNormalizationError(f"{name} must be 3 finite{' positive' if positive else ''}"
                                      f" numbers, got {v!r}")
    return a


