"""Classical nucleus / cytoplasm segmentation (no training needed).

Method (parameters in :class:`OtsuParams`):

1. **Nucleus**: Romanowsky-stained nuclei are the darkest, most saturated objects; the
   representation is ``nucleus_score = S_hsv * (1 - G/255)`` smoothed with a Gaussian; Otsu
   threshold; small objects removed; the component nearest the image centre is kept together
   with every other component within ``lobe_distance`` (relative to the cell size) so all
   lobes of a segmented neutrophil are kept; holes filled.
2. **Whole cell**: a second Otsu threshold on the distance from the background colour
   (estimated as the median colour of the brightest pixels) selects foreground; red cells
   glued to the white cell are cut by a marker-based watershed on the distance transform;
   the region containing the nucleus is kept, holes filled, nucleus added.
3. **No cell**: when no nucleus-like object is present, empty masks with ``found=False``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .masks import CellMasks

__all__ = ["OtsuParams", "segment_otsu"]


@dataclass(frozen=True)
class OtsuParams:
    sigma: float = 1.0
    min_nucleus_fraction: float = 0.002
    lobe_distance: float = 0.25
    min_contrast: float = 0.08


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values))


def segment_otsu(image: np.ndarray, params: OtsuParams | None = None) -> CellMasks:
    """Segment one centred cell with thresholds; see the module docstring for the method."""
    import cv2
    from skimage.segmentation import watershed

    p = params or OtsuParams()
    h, w = image.shape[:2]
    rgb = image.astype(np.float32) / 255.0
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32) / 255.0
    score = hsv[..., 1] * (1.0 - rgb[..., 1])
    score = ndi.gaussian_filter(score, p.sigma)
    if score.max() - score.min() < p.min_contrast:
        return CellMasks.empty((h, w), reason="no contrast")
    t = _otsu(score)
    nuc = score > t
    min_size = max(4, int(p.min_nucleus_fraction * h * w))
    lab, n = ndi.label(nuc)
    if n:
        sizes = np.bincount(lab.ravel())
        small = sizes < min_size
        small[0] = True
        lab[small[lab]] = 0
        lab, n = ndi.label(lab > 0)
    if n == 0:
        return CellMasks.empty((h, w), reason="no nucleus-like object")
    yy, xx = np.mgrid[:h, :w]
    dist_c = np.hypot(yy - h / 2.0, xx - w / 2.0)
    mins = ndi.minimum(dist_c, lab, index=np.arange(1, n + 1))
    seed = int(np.argmin(mins)) + 1
    seed_mask = lab == seed
    d_seed = ndi.distance_transform_edt(~seed_mask)
    reach = p.lobe_distance * np.sqrt(seed_mask.sum() / np.pi) * 2
    keep = [seed] + [i for i in range(1, n + 1)
                     if i != seed and ndi.minimum(d_seed, lab, i) <= reach]
    nucleus = ndi.binary_fill_holes(np.isin(lab, keep))

    # whole cell: distance from background colour
    bright = rgb.sum(axis=2)
    bg = np.median(rgb[bright >= np.quantile(bright, 0.9)], axis=0)
    fg_score = ndi.gaussian_filter(np.linalg.norm(rgb - bg, axis=2), p.sigma)
    fg = fg_score > _otsu(fg_score)
    fg = ndi.binary_fill_holes(fg | nucleus)
    dist = ndi.distance_transform_edt(fg)
    markers = np.zeros((h, w), np.int32)
    markers[nucleus] = 1
    # other blobs: local maxima of distance far from the nucleus
    others = (dist > 0.5 * dist[nucleus].max()) & ~ndi.binary_dilation(nucleus, iterations=3)
    olab, on = ndi.label(others)
    markers[olab > 0] = olab[olab > 0] + 1
    ws = watershed(-dist, markers, mask=fg)
    cell = ndi.binary_fill_holes(ws == 1) | nucleus
    return CellMasks(nucleus, cell & ~nucleus, found=True,
                     info={"nucleus_threshold": t, "n_lobes_kept": len(keep)})
