"""White cells in a whole smear field: find them, crop one centred cell per image.

The classifiers of this library take one white cell centred in its image (as in PBC). A
camera field of a smear holds many red cells, platelets and a few white cells; this module
finds the white cells and cuts one square image per cell, which ``morphocell predict`` then
classifies.

Method (classical, no training; the nucleus score of :mod:`morphocell.segmentation.otsu`):

0. **Working scale.** The field is shrunk by the integer factor
   ``f = max(1, min(H, W) // work_side)`` (block averages); boxes are mapped back by ``f``.
1. **Nucleus score.** Optical density relative to the background (the median colour of the
   brightest ``bg_quantile`` share of pixels, Beer-Lambert, smoothed with ``sigma``),
   ``stain = OD_R + OD_G + OD_B`` and ``nscore = norm(stain) + norm(B - G)``: Romanowsky
   chromatin is the most stained and the most purple material in the field.
2. **Nuclei.** Pixels above the upper 3-class multi-Otsu threshold of ``nscore``; their
   8-connected components of at least ``min_nucleus_fraction`` of the field's area (platelets
   and stain specks are smaller). **Colour check:** Romanowsky chromatin transmits blue
   light and absorbs green, eosin (red cells) absorbs both, so a component's median
   ``OD_B / OD_G`` is low on a nucleus and high on red cells. Where a field's white cell is
   pale, the upper class also takes clumps of the darkest red cells: a component whose ratio
   exceeds the field's lowest (its most purple component, a nucleus when the field has a
   white cell) by more than ``red_margin`` is dropped. The margin is relative because the
   ratio of a nucleus depends on the stain (about 0 to 0.2 in BCCD, 0.2 to 0.3 in PBC, up to
   0.55 in segwbc dataset1), while the components of one cell differ by at most ~0.15.
3. **One cell per nucleus group.** Nucleus components closer than ``merge_distance`` x the
   field's geometric-mean side (dilation by that radius) are lobes of one cell (a segmented
   neutrophil breaks into several components).
4. **Box.** The square around the group's nucleus pixels, its half side enlarged by
   ``margin`` x the group's equivalent diameter (room for the cytoplasm), clipped to the
   field.

Parameters chosen on the even-numbered BCCD fields (``BloodImage_00000``, ``_00002``, ...) and
measured on the odd ones (docs/segmentation.md, ``benchmarks/detect_bccd.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._utils import cv2_one_thread

__all__ = ["DetectParams", "CellBox", "find_white_cells", "crop_cell", "crop_cells"]


@dataclass(frozen=True)
class DetectParams:
    """Fixed parameters of :func:`find_white_cells` (see the module docstring)."""

    #: fields are shrunk by the integer factor min(H, W) // work_side (when >= 2)
    work_side: int = 240
    #: share of the brightest pixels whose median colour is the background
    bg_quantile: float = 0.10
    #: optical density mapped to 255 (as the classical segmentation)
    od_max: float = 2.0
    #: Gaussian smoothing of the optical density, working-scale pixels
    sigma: float = 1.0
    #: smallest nucleus component, share of the field's area
    min_nucleus_fraction: float = 0.01
    #: a component whose median OD_B / OD_G exceeds the field's lowest by more than this is
    #: red cells, not a nucleus
    red_margin: float = 0.35
    #: nucleus components closer than this x sqrt(H x W) are one cell
    merge_distance: float = 0.02
    #: half side of the box = half the nucleus extent + margin x nucleus equivalent diameter
    margin: float = 0.2


class CellBox(NamedTuple):
    """A white cell found in a field: the square box ``[x0, x1) x [y0, y1)`` in pixels of
    the field (clipped to it) and the nucleus area in pixels of the field."""

    x0: int
    y0: int
    x1: int
    y1: int
    nucleus_area: int


@cv2_one_thread()
def find_white_cells(image: np.ndarray, params: DetectParams | None = None) -> list[CellBox]:
    """Boxes of the white cells of a smear field, largest nucleus first.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
        RGB field (:func:`morphocell.io.read_image`).
    params : DetectParams, optional

    Returns
    -------
    list of CellBox
        Empty when the field holds no nucleus-like object (blank, uniform or red cells only).

    Examples
    --------
    >>> import numpy as np
    >>> find_white_cells(np.full((480, 640, 3), 230, np.uint8))
    []
    """
    import cv2

    from .otsu import _background, _components, _lut, _norm8, multi_otsu3, nucleus_score, shrink

    p = params or DetectParams()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    H, W = image.shape[:2]
    img, f = shrink(image, p.work_side)
    h, w = img.shape[:2]
    ksize = 2 * int(round(2 * p.sigma)) + 1

    bg = _background(img, p.bg_quantile, step=1)  # all pixels: the same for a field's flips
    od8 = cv2.GaussianBlur(cv2.LUT(img, _lut(bg, p.od_max)), (ksize, ksize), p.sigma)
    n8 = nucleus_score(img, _norm8(od8.astype(np.float32).sum(axis=2)), p.sigma)
    if int(n8.max()) == int(n8.min()):
        return []
    _, t2 = multi_otsu3(n8)
    _, lab, area = _components((n8 > t2).astype(np.uint8))
    keep = area >= max(4, p.min_nucleus_fraction * h * w)
    keep[0] = False
    if not keep.any():
        return []
    kept = np.flatnonzero(keep)
    if len(kept) > 1:
        ratio = _blue_green_ratio(od8, lab, kept)
        keep[kept[ratio > ratio.min() + p.red_margin]] = False
    nuc = keep[lab].astype(np.uint8)
    r = max(1, int(round(p.merge_distance * np.sqrt(h * w))))
    grown = cv2.dilate(nuc, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    ng, glab = cv2.connectedComponents(grown, connectivity=8)
    boxes = []
    for g in range(1, ng):
        ys, xs = np.nonzero((glab == g) & (nuc > 0))
        if len(xs) == 0:
            continue
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        half = max(x1 - x0, y1 - y0) / 2.0 + p.margin * 2.0 * np.sqrt(len(xs) / np.pi)
        boxes.append(CellBox(int(max(0, np.floor((cx - half) * f))),
                             int(max(0, np.floor((cy - half) * f))),
                             int(min(W, np.ceil((cx + half) * f))),
                             int(min(H, np.ceil((cy + half) * f))),
                             int(len(xs) * f * f)))
    boxes.sort(key=lambda b: -b.nucleus_area)
    return boxes


def _blue_green_ratio(od8: np.ndarray, lab: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Median ``OD_B / OD_G`` over the pixels of each component ``ids`` of ``lab``."""
    from scipy import ndimage

    ratio = od8[..., 2].astype(np.float32) / np.maximum(od8[..., 1].astype(np.float32), 1.0)
    return np.asarray(ndimage.median(ratio, labels=lab, index=ids), dtype=np.float64)


def _crop_background(image: np.ndarray) -> np.ndarray:
    from .otsu import _background

    return np.round(_background(image, DetectParams.bg_quantile, step=2)).astype(np.uint8)


def crop_cell(image: np.ndarray, box: CellBox, size: int | None = None,
              background: np.ndarray | None = None) -> np.ndarray:
    """The square image of one cell: ``box`` cut from ``image``, centred; where the box was
    clipped by the field's edge the square is completed with the field's background colour
    (``background``, RGB; estimated from ``image`` when None). ``size`` resizes the square to
    ``size x size`` pixels (area interpolation when shrinking).
    """
    import cv2

    side = max(box.x1 - box.x0, box.y1 - box.y0)
    # the unclipped square around the box's centre (a clipped box lost its far side)
    H, W = image.shape[:2]
    cx = (box.x0 + box.x1) / 2.0 if 0 < box.x0 and box.x1 < W else None
    cy = (box.y0 + box.y1) / 2.0 if 0 < box.y0 and box.y1 < H else None
    x0 = int(round(cx - side / 2.0)) if cx is not None else (box.x1 - side if box.x0 == 0
                                                              else box.x0)
    y0 = int(round(cy - side / 2.0)) if cy is not None else (box.y1 - side if box.y0 == 0
                                                              else box.y0)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = _crop_background(image) if background is None else background
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(W, x0 + side), min(H, y0 + side)
    out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if size is not None and int(size) != side:
        interp = cv2.INTER_AREA if int(size) < side else cv2.INTER_LINEAR
        out = cv2.resize(out, (int(size), int(size)), interpolation=interp)
    return out


def crop_cells(image: np.ndarray, boxes: list[CellBox] | None = None,
               size: int | None = None) -> list[np.ndarray]:
    """Square images of the white cells of a field (:func:`find_white_cells` when ``boxes``
    is None), one per box, in the boxes' order."""
    if boxes is None:
        boxes = find_white_cells(image)
    bg = _crop_background(image) if boxes else None
    return [crop_cell(image, b, size, background=bg) for b in boxes]
