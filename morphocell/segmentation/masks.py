"""``CellMasks``: the result of segmentation, and the 0/128/255 mask encoding.

Encoding everywhere (files, arrays): 0 background, 128 cytoplasm, 255 nucleus — the same as
the expert masks of the segwbc dataset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import SegmentationError

__all__ = ["CellMasks", "BACKGROUND", "CYTOPLASM", "NUCLEUS", "overlay", "save_masks"]

BACKGROUND, CYTOPLASM, NUCLEUS = 0, 128, 255


@dataclass(frozen=True)
class CellMasks:
    """Boolean masks of one cell.

    Attributes
    ----------
    nucleus, cytoplasm : ndarray of bool, shape (H, W)
        Disjoint masks.
    found : bool
        ``False`` when no cell was found (then all masks are empty).
    info : dict
        Method-specific diagnostics (thresholds, number of lobes found, ...).
    """

    nucleus: np.ndarray
    cytoplasm: np.ndarray
    found: bool = True
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        n = np.asarray(self.nucleus, dtype=bool)
        c = np.asarray(self.cytoplasm, dtype=bool)
        if n.ndim != 2 or n.shape != c.shape:
            raise SegmentationError(
                f"nucleus and cytoplasm masks must be 2-D and equal in shape, got {n.shape} and "
                f"{c.shape}")
        object.__setattr__(self, "nucleus", n)
        object.__setattr__(self, "cytoplasm", c & ~n)

    @classmethod
    def _trusted(cls, nucleus: np.ndarray, cytoplasm: np.ndarray, found: bool, info: dict
                 ) -> CellMasks:
        """Masks a segmenter built already valid (2-D bool arrays of one shape, disjoint):
        the fields are set without ``__post_init__``'s copies."""
        self = object.__new__(cls)
        for name, value in (("nucleus", nucleus), ("cytoplasm", cytoplasm), ("found", found),
                            ("info", info)):
            object.__setattr__(self, name, value)
        return self

    @property
    def cell(self) -> np.ndarray:
        """``nucleus | cytoplasm``."""
        return self.nucleus | self.cytoplasm

    @property
    def shape(self) -> tuple[int, int]:
        return self.nucleus.shape

    @classmethod
    def empty(cls, shape: tuple[int, int], **info) -> CellMasks:
        z = np.zeros(shape, dtype=bool)
        return cls(z, z.copy(), found=False, info=info)

    @classmethod
    def from_label_image(cls, label: np.ndarray) -> CellMasks:
        """From a 0/128/255 (or 0/1/2) encoded mask image."""
        a = np.asarray(label)
        if a.ndim == 3:
            a = a[..., 0]
        vals = set(np.unique(a).tolist())
        if vals <= {0, 1, 2}:
            nuc, cyt = a == 2, a == 1
        else:
            nuc, cyt = a >= 192, (a >= 64) & (a < 192)
        return cls(nuc, cyt, found=bool(nuc.any() or cyt.any()))

    def to_label_image(self) -> np.ndarray:
        """Encode as ``uint8``: 0 background, 128 cytoplasm, 255 nucleus."""
        out = np.zeros(self.shape, dtype=np.uint8)
        out[self.cytoplasm] = CYTOPLASM
        out[self.nucleus] = NUCLEUS
        return out


def overlay(image: np.ndarray, masks: CellMasks, thickness: int = 1) -> np.ndarray:
    """RGB image with the cell contour in green and the nucleus contour in blue."""
    import cv2

    out = np.ascontiguousarray(image[..., :3].copy())
    for m, color in ((masks.cell, (0, 200, 0)), (masks.nucleus, (0, 0, 255))):
        if m.any():
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, color, thickness)
    return out


def save_masks(image: np.ndarray, masks: CellMasks, out_dir: str | os.PathLike, name: str
               ) -> tuple[str, str]:
    """Write ``<name>_mask.png`` and ``<name>_overlay.png`` atomically; return their paths."""
    from PIL import Image

    from .._utils import atomic_path
    from ..io import derived_pnginfo  # marks the files so no lister reads them as cells

    out_dir = os.fspath(out_dir)
    mask_path = os.path.join(out_dir, f"{name}_mask.png")
    over_path = os.path.join(out_dir, f"{name}_overlay.png")
    with atomic_path(mask_path) as tmp:
        Image.fromarray(masks.to_label_image()).save(tmp, format="PNG", pnginfo=derived_pnginfo())
    with atomic_path(over_path) as tmp:
        Image.fromarray(overlay(image, masks)).save(tmp, format="PNG", pnginfo=derived_pnginfo())
    return mask_path, over_path
