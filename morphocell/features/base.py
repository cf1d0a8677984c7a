"""The family protocol and what every family receives: the image and masks cropped to the cell.

Per-pixel work happens on the bounding box of the cell (plus ``PAD`` pixels), never on the
whole image. A feature family is a module (:mod:`.shape`, :mod:`.color`, :mod:`.texture`)
that satisfies :class:`FeatureFamily`:

* ``NAMES: tuple[str, ...]`` — its column names, in the order of its vectors;
* ``specs() -> list[FeatureSpec]`` — the name, unit, meaning and formula of each of
  ``NAMES``, in the same order (what the registry holds);
* ``compute_array(crop: Crop) -> ndarray`` — a float64 vector of ``len(NAMES)`` values; a
  feature of an empty region (e.g. no cytoplasm) is ``NaN`` (the NaN policy);
* ``compute(crop: Crop) -> dict[str, float]`` — the same values by name.

The extractor (:func:`morphocell.features.extractor.extract_array`) calls only
``compute_array`` and ``NAMES``; a registered name that no family computes, or a computed
column that is not registered, is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import FeatureError
from ..segmentation.masks import CellMasks

if TYPE_CHECKING:
    from .registry import FeatureSpec

__all__ = ["Crop", "FeatureFamily", "make_crop", "as_dict", "PAD", "REGION_ATTR"]

#: Margin (pixels) kept around the cell's bounding box.
PAD = 4
#: Region token -> Crop attribute
REGION_ATTR = {"Nucleus": "nucleus", "Cytoplasm": "cytoplasm", "Cell": "cell"}


@dataclass
class Crop:
    """Image and masks cropped to the cell's bounding box (+ ``PAD``)."""

    image: np.ndarray       # (h, w, 3) uint8, C-contiguous
    nucleus: np.ndarray     # (h, w) bool
    cytoplasm: np.ndarray   # (h, w) bool
    offset: tuple[int, int]  # (row, col) of the crop in the full image

    @cached_property
    def cell(self) -> np.ndarray:
        return self.nucleus | self.cytoplasm

    @cached_property
    def gray(self) -> np.ndarray:
        """8-bit grey level: ``round(0.299 R + 0.587 G + 0.114 B)`` (ITU-R BT.601, as
        OpenCV's ``COLOR_RGB2GRAY``)."""
        import cv2

        return cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY)

    def mask(self, region: str) -> np.ndarray:
        """Mask of a region token (``Nucleus``, ``Cytoplasm``, ``Cell``)."""
        return getattr(self, REGION_ATTR[region])


def make_crop(image: np.ndarray, masks: CellMasks, pad: int = PAD) -> Crop:
    """Crop ``image`` and ``masks`` to the bounding box of ``masks.cell`` plus ``pad``."""
    if image.shape[:2] != masks.shape:
        raise FeatureError(f"image shape {image.shape[:2]} and mask shape {masks.shape} differ")
    from ._kernels.crop import cell_bbox

    box = np.empty(4, np.int64)
    if not cell_bbox(masks.nucleus, masks.cytoplasm, box):
        r0, r1, c0, c1 = 0, image.shape[0], 0, image.shape[1]
    else:
        r0 = max(int(box[0]) - pad, 0)
        r1 = min(int(box[1]) + 1 + pad, image.shape[0])
        c0 = max(int(box[2]) - pad, 0)
        c1 = min(int(box[3]) + 1 + pad, image.shape[1])
    return Crop(
        image=np.ascontiguousarray(image[r0:r1, c0:c1]),
        nucleus=np.ascontiguousarray(masks.nucleus[r0:r1, c0:c1]),
        cytoplasm=np.ascontiguousarray(masks.cytoplasm[r0:r1, c0:c1]),
        offset=(r0, c0),
    )


@runtime_checkable
class FeatureFamily(Protocol):
    """What a feature family module provides (see the module docstring)."""

    NAMES: tuple[str, ...]

    def specs(self) -> list[FeatureSpec]:
        """Spec of each of ``NAMES``, in the same order."""

    def compute_array(self, crop: Crop) -> np.ndarray:
        """float64 vector of ``len(NAMES)`` values (NaN for an empty region)."""

    def compute(self, crop: Crop) -> dict[str, float]:
        """``{name: value}`` in ``NAMES`` order."""


def as_dict(names: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    """``{name: value}`` of a family's vector (the ``compute`` of every family)."""
    return dict(zip(names, values.tolist(), strict=True))
