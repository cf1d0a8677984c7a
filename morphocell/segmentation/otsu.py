"""Classical nucleus / cytoplasm segmentation (no training needed).

All thresholds are chosen per image (Otsu / multi-Otsu); the fixed parameters live in
:class:`OtsuParams` and are documented there and in ``docs/segmentation.md``. They were
tuned on the even-numbered images of both segwbc datasets only. This module holds the
method and its validated wrappers; the compiled loops (thresholds, watershed, connected
components, the red-cell markers) are in :mod:`morphocell.segmentation._kernels`.

Method
------
0. **Working scale.** The image is shrunk by the integer factor
   ``f = max(1, min(H, W) // work_side)`` (exact f x f block averages, so a shift by a
   multiple of ``f`` pixels shifts the result exactly); every step below runs there and
   the two masks are enlarged back (linear interpolation of the 0/255 mask, threshold at
   128). A 256 x 256 image is processed at 128 x 128.
1. **Optical density relative to the background** (Beer-Lambert). The background colour
   ``b`` is the per-channel median of the brightest ``bg_quantile`` share of pixels; every
   channel is mapped through ``OD_c = log((b_c + 1) / (I_c + 1))`` (clipped to
   ``[0, od_max]``, a 256-entry look-up table), then smoothed (Gaussian, ``sigma``).
   Dividing by the background removes the tint of the illumination: yellowish, pinkish or
   grey backgrounds all become OD 0. ``stain = OD_R + OD_G + OD_B``.
2. **Nucleus.** Romanowsky chromatin is both the most stained and the most purple (blue
   transmitted, green absorbed) material:
   ``nscore = norm(stain) + norm(B - G)`` where ``norm`` maps the image's range to 0..255.
   The 3-class multi-Otsu thresholds ``t1 < t2`` of ``nscore`` (background / cytoplasm and
   red cells / nucleus, Liao et al. 2001) give the nucleus threshold
   ``t2 - nuc_shift * (t2 - t1)``. Components smaller than ``min_nucleus_fraction`` of the
   image are dropped. The seed is the component nearest the image centre (distance from
   the centre to its nearest pixel, in 4-pixel steps; ties go to the larger). Every other
   component of at least ``lobe_min_ratio`` of the seed's area, within ``lobe_distance``
   seed diameters of the seed *and* in the same stained (foreground) region is a lobe of
   the same nucleus (a platelet next to the cell is not); holes are filled.
3. **Foreground.** ``stain`` normalised to 0..255; its lower 3-class multi-Otsu
   threshold ``f1`` (background vs. everything stained) times ``fg_level`` gives the
   foreground; the candidate cell is the foreground region connected to the nucleus.
4. **Red cells glued to the white cell.** Eosin-stained red cells absorb relatively more
   blue than the cytoplasm does: their chromaticity ``OD_B / stain`` is higher. Two
   sources of red-cell markers:

   a. the cytoplasm reference is the ``cyt_quantile`` quantile of the chromaticity in a
      ring of ``ring_factor`` nucleus radii (at least 3 px) around the nucleus; candidate
      pixels beyond the ring above reference + ``rbc_chroma_gap`` are red-cell-like; their
      components (eroded by ``marker_erode``) of at least ``rbc_min_area`` of the nucleus
      area become markers when they contain a peak of the candidate's distance transform
      (a local maximum within ``peak_radius``, at least ``min_rbc_radius`` deep: a red cell
      is a round body of its own) or reach farther than ``far_factor`` nucleus radii;
   b. red cells lying free in the field (foreground not connected to the cell, at least
      ``free_rbc_min_area`` of the nucleus area) give this image's red-cell chromaticity
      and stain (medians); when they exist, no marker pixel may be denser than
      ``1 + rbc_stain_tol`` times their stain (eosinophil granules have the red-cell
      chromaticity but about twice the density). When their chromaticity exceeds the
      nucleus' by ``rbc_chroma_gap``, candidate pixels
      within ``free_rbc_delta`` of it and more than ``free_rbc_ring`` px from the nucleus
      (this colour evidence is specific enough to come close to the nucleus, so red cells
      touching a thin cytoplasm rim are cut off) form markers (same erosion and area rule).
5. **Watershed.** Marker-controlled watershed (priority flooding, :func:`flood`) of the
   inverted distance transform of the candidate, from the nucleus (white cell) and the
   red-cell markers: the cut between the white cell and a glued red cell falls on the
   neck between them. The white-cell basin is opened with a disc of ``open_radius``,
   its components holding the nucleus kept, holes filled.
6. **No cell.** ``found=False`` with empty masks when the stain range is below
   ``min_contrast`` (blank, black, uniform images), when Otsu's separability
   (between-class / total variance) of ``nscore`` is below ``min_separability``, when less
   than ``min_coherence`` of the above-threshold nucleus-score pixels lie in components of
   at least ``max(16, min_nucleus_fraction * area)`` pixels (noise breaks into specks), or
   when no nucleus component survives; never an exception for that.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._utils import cv2_one_thread
from . import _kernels as K
from .masks import CellMasks

__all__ = ["OtsuParams", "segment_otsu", "flood", "multi_otsu3", "otsu_threshold"]


@dataclass(frozen=True)
class OtsuParams:
    """Parameters of :func:`segment_otsu` (defaults tuned on even segwbc ids only).

    Lengths are in pixels of the working image (see ``work_side``).
    """

    #: images are shrunk by the integer factor min(H, W) // work_side (when >= 2)
    work_side: int = 128
    #: share of brightest pixels whose median colour is the background colour
    bg_quantile: float = 0.10
    #: optical density mapped to 255 in the uint8 OD image
    od_max: float = 2.0
    #: Gaussian smoothing of the OD and RGB images before thresholding
    sigma: float = 1.0
    #: nucleus threshold = t2 - nuc_shift * (t2 - t1) (multi-Otsu t1 < t2 of nscore)
    nuc_shift: float = -0.05
    #: smallest nucleus component, as a share of the image area
    min_nucleus_fraction: float = 0.002
    #: lobes within this many seed diameters of the seed are kept
    lobe_distance: float = 1.0
    #: a lobe has at least this share of the seed's area (smaller: platelet, debris)
    lobe_min_ratio: float = 0.1
    #: foreground threshold as a share of the lower multi-Otsu threshold of the stain
    fg_level: float = 0.6
    #: width of the cytoplasm-reference ring outside the nucleus, in nucleus radii
    ring_factor: float = 0.3
    #: quantile of OD_B / stain in the ring taken as the cytoplasm chromaticity
    cyt_quantile: float = 0.25
    #: red-cell-like: OD_B / stain above the cytoplasm reference by at least this
    rbc_chroma_gap: float = 0.05
    #: least area of a red-cell marker, as a share of the nucleus area
    rbc_min_area: float = 0.1
    #: neighbourhood radius of the distance-transform peaks (red-cell centres); 0: no test
    peak_radius: int = 2
    #: red-cell-coloured components reaching farther than this many nucleus radii from
    #: the nucleus are red-cell markers even without a distance peak
    far_factor: float = 2.0
    #: red-cell colour from free red cells: candidate pixels whose OD_B / stain is within
    #: this of theirs are red-cell markers (None: off)
    free_rbc_delta: float | None = 0.035
    #: markers from the free red cells' colour start this far (px) from the nucleus
    free_rbc_ring: float = 4.0
    #: red-cell markers are at most (1 + this) x the free red cells' median stain
    rbc_stain_tol: float = 0.5
    #: least area of the free red cells, as a share of the nucleus area
    free_rbc_min_area: float = 0.5
    #: least distance-transform value of a red-cell centre
    min_rbc_radius: float = 3.0
    #: erosion radius of the red-cell markers
    marker_erode: int = 1
    #: radius of the opening of the white-cell basin (cuts thin bridges)
    open_radius: int = 2
    #: least range of the smoothed stain (sum of three ODs); below: no cell
    min_contrast: float = 0.45
    #: least share of the above-threshold nucleus-score pixels that lie in components of
    #: at least ``min_nucleus_fraction`` (noise gives many tiny blobs); below: no cell
    min_coherence: float = 0.8
    #: least Otsu separability (between-class / total variance) of nscore; below: no cell
    min_separability: float = 0.3


# ---------------------------------------------------------------------------- wrappers
# validated Python entry points over the numba kernels of ._kernels (K)
def flood(relief: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Marker-controlled watershed of a uint8 ``relief`` (priority flooding, see
    :func:`morphocell.segmentation._kernels.flood`).

    Parameters
    ----------
    relief : ndarray (H, W) uint8
        Lower values are flooded first.
    markers : ndarray (H, W) int
        ``> 0`` seeds, ``0`` pixels to fill, ``-1`` pixels that stay unlabelled.

    Returns
    -------
    ndarray (H, W) int32
        Every pixel reachable from a seed without crossing a ``-1`` pixel gets the seed's
        label; unreachable zeros stay 0, ``-1`` stay ``-1``.
    """
    rel = np.ascontiguousarray(relief, dtype=np.uint8)
    lab = np.array(markers, dtype=np.int32, order="C", copy=True)
    if rel.shape != lab.shape or rel.ndim != 2:
        raise ValueError(f"relief {rel.shape} and markers {lab.shape} must be equal 2-D shapes")
    _flood_in_place(rel, lab)
    return lab


def _flood_in_place(relief: np.ndarray, labels: np.ndarray) -> None:
    """:func:`flood` without its checks and copies: ``labels`` (C-contiguous int32, the
    shape of the C-contiguous uint8 ``relief``) is flooded in place."""
    K.flood(relief, labels, np.empty(relief.size, np.int64), np.empty(256, np.int64),
                  np.empty(256, np.int64))


def multi_otsu3(values: np.ndarray) -> tuple[int, int]:
    """3-class Otsu thresholds ``(t1, t2)`` of uint8 ``values``: classes ``<= t1``,
    ``(t1, t2]``, ``> t2`` (the same as ``skimage.filters.threshold_multiotsu(classes=3)``
    up to its ``>``/``>=`` convention)."""
    return _multi_otsu3_hist(_hist256(values))


def _multi_otsu3_hist(hist: np.ndarray) -> tuple[int, int]:
    out = np.zeros(2, np.int64)
    K.multi_otsu3(hist, out)
    return int(out[0]), int(out[1])


def otsu_threshold(values: np.ndarray) -> tuple[int, float, float]:
    """Otsu threshold of uint8 ``values`` (class 0: ``<= t``) with its separability
    ``sigma_B^2 / sigma_T^2`` in [0, 1] and the mean of the lower class."""
    return _otsu_hist(_hist256(values))


def _otsu_hist(hist: np.ndarray) -> tuple[int, float, float]:
    out = np.zeros(3, np.float64)
    K.otsu(hist, out)
    return int(out[0]), float(out[1]), float(out[2])


def _lut(bg: np.ndarray, od_max: float) -> np.ndarray:
    """uint8 (1, 256, 3) table of the optical density ``log((bg + 1) / (I + 1))`` per
    channel, scaled so that ``od_max`` is 255 (read-only; cached: a lab's background colours
    repeat from image to image)."""
    return _lut_cached(tuple(float(c) for c in bg), float(od_max))


@lru_cache(maxsize=256)
def _lut_cached(bg: tuple[float, float, float], od_max: float) -> np.ndarray:
    v = np.arange(256, dtype=np.float64)[:, None]
    od = np.log((np.asarray(bg, np.float64)[None, :] + 1.0) / (v + 1.0))
    q = np.clip(od * (255.0 / od_max), 0, 255)
    out = np.round(q).astype(np.uint8).reshape(1, 256, 3)
    out.setflags(write=False)
    return out


def _background(img: np.ndarray, q: float, step: int = 3) -> np.ndarray:
    """Median colour (float64, as ``np.median``) of the brightest ``q`` share of pixels
    (every ``step``-th row/column; ties of the cut-off brightness included)."""
    out = np.empty(3, np.float64)
    K.background(np.ascontiguousarray(img, np.uint8), int(step), float(q), out)
    return out


_NO_SE = np.zeros((0, 0), np.uint8)  # "no peak test" (MarkerRule.peak_se)


@lru_cache(maxsize=16)
def _disc(r: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


@lru_cache(maxsize=16)
def _centre_distance(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0).astype(np.float32)
    d.setflags(write=False)
    return d


def _norm8(x: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.normalize(x, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)


def _select_fill(a: np.ndarray, b: np.ndarray | None = None, seed: np.ndarray | None = None,
                 fill: bool = False) -> np.ndarray:
    """uint8 0/1 mask ``a | b``; with ``seed`` only its 8-connected components that touch
    ``seed``; with ``fill`` its holes filled (the 4-connected background not reaching the
    border). One compiled pass (:func:`._kernels.select_fill`); tested against OpenCV's
    labelling and flood fill (``tests/reference.py``)."""
    a = np.ascontiguousarray(a)
    out = np.zeros(a.shape, np.uint8)
    K.select_fill(a, a if b is None else np.ascontiguousarray(b),
                        a if seed is None else np.ascontiguousarray(seed), seed is not None,
                        fill, out)
    return out


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components of a uint8 0/1 mask: (count incl. background, labels, areas)."""
    import cv2

    n, lab = cv2.connectedComponents(mask, connectivity=8)
    area = np.zeros(n, np.int64)
    K.label_areas(lab, area)
    return n, lab, area


def _labels_hit(lab: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Boolean ``(n,)``: labels of ``lab`` that have a pixel under a nonzero ``mask``
    (``np.bincount(lab[mask > 0], minlength=n) > 0``)."""
    out = np.zeros(n, np.bool_)
    K.labels_hit(lab, np.ascontiguousarray(mask), out)
    return out


def _select_labels(lab: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """uint8 0/1 image of the pixels whose label is kept (``keep[lab]``)."""
    out = np.empty(lab.shape, np.uint8)
    K.select_labels(lab, keep, out)
    return out


def _hist256(values: np.ndarray) -> np.ndarray:
    import cv2

    v = np.ascontiguousarray(values, np.uint8)
    if v.ndim == 1:
        v = v.reshape(1, -1)
    return cv2.calcHist([v], [0], None, [256], [0, 256]).ravel().astype(np.float64)


def _label_min(lab: np.ndarray, val: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.inf, np.float32)
    K.label_min(lab, np.ascontiguousarray(val, np.float32), out)
    return out


def _candidate_box(cand: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box of the nonzero pixels of ``cand`` grown by ``margin`` (clipped to the
    image). The steps after the candidate cell run inside it as on the whole image: both
    distance transforms (their zero pixels -- the nucleus, or the zeros around the candidate
    -- lie inside, and a shortest chamfer path stays in the bounding box of its two ends;
    OpenCV's float values can differ from the whole image's by 1 ulp, its rounding depending
    on where a pixel lies in the array), the morphology with radii below the margin and the
    hole filling (the margin is zero and joins the outside), the watershed (markers are -1
    outside the candidate), and the min-max normalisation of the distance (its 0 and maximum
    are inside). Masks were identical to the whole-image computation's on 12,331 test images
    (PBC, segwbc, BCCD crops, rotated, rescaled and cropped variants).
    """
    import cv2

    x, y, bw, bh = cv2.boundingRect(cand)
    h, w = cand.shape
    return (slice(max(0, y - margin), min(h, y + bh + margin)),
            slice(max(0, x - margin), min(w, x + bw + margin)))


def _upscale_box(mask: np.ndarray, box: tuple[slice, slice], f: int,
                 shape: tuple[int, int]) -> np.ndarray:
    """A working-scale 0/1 ``mask`` enlarged by the factor ``f`` to ``shape`` (H, W): linear
    interpolation of 0/255 to ``f`` times the size, threshold at 128, the last row/column
    repeated up to ``shape``. Only ``mask[box]`` is resized (``box`` holds every nonzero
    pixel with a margin of at least one zero pixel, or reaches the image border), with the
    result of resizing the whole mask: with the scale exactly ``f`` the sample positions of
    the box's output are those of the whole image's, the box's replicated border is a zero
    row or column (or the image's own border), and every output pixel outside ``f x box``
    interpolates zeros only (tested against the whole-image resize)."""
    import cv2

    h, w = mask.shape
    H, W = shape
    ys, xs = box
    sub = np.ascontiguousarray(mask[box]) * np.uint8(255)
    up = np.zeros((max(H, h * f), max(W, w * f)), bool)
    up[f * ys.start:f * ys.stop, f * xs.start:f * xs.stop] = cv2.resize(
        sub, (f * sub.shape[1], f * sub.shape[0]), interpolation=cv2.INTER_LINEAR) > 127
    Hc, Wc = h * f, w * f
    if H > Hc:  # as np.pad(mode="edge") of the whole image's resize
        up[Hc:, :Wc] = up[Hc - 1, :Wc]
    if W > Wc:
        up[:, Wc:] = up[:, Wc - 1:Wc]
    return up[:H, :W]


def shrink(image: np.ndarray, work_side: int) -> tuple[np.ndarray, int]:
    """``image`` at the working scale: the integer factor ``f = max(1, min(H, W) //
    work_side)``, exact f x f block averages (a shift by a multiple of ``f`` pixels shifts
    the result exactly); returns ``(image at that scale, f)``."""
    import cv2

    H, W = image.shape[:2]
    f = max(1, min(H, W) // work_side)
    Hc, Wc = H - H % f, W - W % f
    if f > 1:
        return cv2.resize(image[:Hc, :Wc], (Wc // f, Hc // f), interpolation=cv2.INTER_AREA), f
    return np.ascontiguousarray(image), f


def nucleus_score(img: np.ndarray, s8: np.ndarray, sigma: float) -> np.ndarray:
    """``nscore = norm(stain) + norm(B - G)`` (uint8, normalised to 0..255) from the image and
    its normalised stain ``s8``: Romanowsky chromatin is the most stained and the most purple
    material (blue transmitted, green absorbed)."""
    import cv2

    ksize = 2 * int(round(2 * sigma)) + 1
    bmg = cv2.GaussianBlur(cv2.subtract(cv2.extractChannel(img, 2), cv2.extractChannel(img, 1),
                                        dtype=cv2.CV_16S), (ksize, ksize), sigma)  # B - G
    return _norm8(s8.astype(np.float32) + _norm8(bmg).astype(np.float32))


# ------------------------------------------------------------------------------ method
@cv2_one_thread()
def segment_otsu(image: np.ndarray, params: OtsuParams | None = None) -> CellMasks:
    """Segment the centred cell of an RGB uint8 image; see the module docstring.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
        Validated RGB image (:func:`morphocell.io.validate_image`).
    params : OtsuParams, optional

    Returns
    -------
    CellMasks
        ``info`` holds the background colour, the thresholds, the number of nucleus
        lobes and of red-cell markers; ``found=False`` (empty masks, ``info["reason"]``)
        when there is no cell.
    """
    import cv2

    p = params or OtsuParams()
    H, W = image.shape[:2]
    img, f = shrink(image, p.work_side)
    h, w = img.shape[:2]
    ksize = 2 * int(round(2 * p.sigma)) + 1

    # 1. optical density relative to the background
    bg = _background(img, p.bg_quantile)
    od8 = cv2.GaussianBlur(cv2.LUT(img, _lut(bg, p.od_max)), (ksize, ksize), p.sigma)
    k = np.float32(p.od_max / 255.0)
    stain = cv2.transform(od8.astype(np.float32), np.array([[k, k, k]], np.float32))  # sum OD
    lo, hi, _, _ = cv2.minMaxLoc(stain)
    if hi - lo < p.min_contrast:
        return CellMasks.empty((H, W), reason="no contrast", stain_range=hi - lo)
    s8 = _norm8(stain)

    # 2. nucleus
    n8 = nucleus_score(img, s8, p.sigma)
    h8 = _hist256(n8)
    _, sep, _ = _otsu_hist(h8)
    if sep < p.min_separability:
        return CellMasks.empty((H, W), reason="no nucleus contrast", separability=sep)
    t1, t2 = _multi_otsu3_hist(h8)
    t_n = t2 - p.nuc_shift * (t2 - t1)
    nlab_n, nlab, area = _components((n8 > t_n).astype(np.uint8))
    min_size = max(4, int(p.min_nucleus_fraction * h * w))
    big = area >= min_size
    big[0] = False
    coherent = float(area[1:][area[1:] >= max(16, min_size)].sum()) / max(1.0, float(area[1:].sum()))
    if not big.any() or coherent < p.min_coherence:
        return CellMasks.empty((H, W), reason="no nucleus-like object", separability=sep,
                               coherence=coherent)

    # 3. foreground (needed to keep the lobes of the same cell)
    f1, _ = multi_otsu3(s8)
    fg = (s8 > p.fg_level * f1).astype(np.uint8)

    dmin = _label_min(nlab, _centre_distance(h, w), nlab_n)
    ids = np.flatnonzero(big)
    order = np.lexsort((-area[ids], np.round(dmin[ids] / 4.0)))
    best = int(ids[order[0]])
    seed = (nlab == best).astype(np.uint8)
    keep = np.zeros(nlab_n, bool)
    keep[best] = True
    if len(ids) > 1:
        dseed = cv2.distanceTransform(1 - seed, cv2.DIST_L2, 3)
        dlobe = _label_min(nlab, dseed, nlab_n)
        reach = p.lobe_distance * 2.0 * np.sqrt(area[best] / np.pi)
        same = _select_fill(fg, seed, seed=seed)
        in_same = _labels_hit(nlab, same, nlab_n)
        keep |= big & (dlobe <= reach) & in_same & (area >= p.lobe_min_ratio * area[best])
    nucleus = _select_fill(_select_labels(nlab, keep), fill=True)

    # 4. red-cell markers. Everything from here to the end of step 5 happens inside the
    # candidate cell (cand0; the free red cells aside), so it runs on cand0's bounding box
    # plus a margin of zeros: the same values as on the whole image (_candidate_box), on a
    # third to a tenth of the pixels.
    n_area = int(nucleus.sum())
    r_n = float(np.sqrt(n_area / np.pi))
    cand_full = _select_fill(fg, nucleus, seed=nucleus)
    box = _candidate_box(cand_full, 1 + max(1, p.peak_radius, p.open_radius, p.marker_erode))
    cand0 = np.ascontiguousarray(cand_full[box])
    nuc = np.ascontiguousarray(nucleus[box])
    dist = cv2.distanceTransform(cand0, cv2.DIST_L2, 3)
    dnuc = cv2.distanceTransform(1 - nuc, cv2.DIST_L2, 3)
    ring_w = max(3.0, p.ring_factor * r_n)
    # the rest of step 4 -- the ring's chromaticity quantile, the free red cells' medians,
    # the red-cell-like pixels, their eroded components and the peak / distance test -- and
    # the markers of step 5 in one compiled call (_kernels.rbc_markers)
    markers = np.empty(cand0.shape, np.int32)
    y0, x0 = box[0].start, box[1].start
    scene = K.RbcScene(fg, cand_full, s8, od8, stain, y0, x0, cand0, nuc, dist, dnuc)
    params = K.RbcParams(
        int(f1), k, np.float32(ring_w), float(p.cyt_quantile), float(p.rbc_chroma_gap),
        float(p.free_rbc_min_area * n_area), float(p.rbc_stain_tol),
        p.free_rbc_delta is not None, float(p.free_rbc_delta or 0.0),
        np.float32(p.free_rbc_ring), float(p.rbc_min_area * n_area),
        _disc(p.peak_radius) if p.peak_radius > 0 else _NO_SE, np.float32(p.min_rbc_radius),
        np.float32(p.far_factor * r_n))
    n_rbc = K.rbc_markers(tuple(scene), tuple(params), markers)

    # 5. watershed of the inverted distance transform from nucleus + red-cell markers
    ws = markers
    _flood_in_place(255 - _norm8(dist), ws)
    cell_c = (ws == 1).astype(np.uint8)
    if p.open_radius > 0:
        cell_c = cv2.morphologyEx(cell_c, cv2.MORPH_OPEN, _disc(p.open_radius))
    cell = np.zeros((h, w), np.uint8)
    cell[box] = _select_fill(cell_c, nuc, seed=nuc, fill=True)

    if f == 2:  # the usual case (256-511 px images): one compiled pass over the box
        nb = np.zeros((H, W), bool)
        cyt = np.zeros((H, W), bool)
        K.upscale2(nucleus, cell, box[0].start, box[0].stop, box[1].start, box[1].stop,
                   nb, cyt)
    else:
        if f > 1:
            nb = _upscale_box(nucleus, box, f, (H, W))
            cb = _upscale_box(cell, box, f, (H, W)) | nb
        else:
            nb = nucleus.astype(bool)
            cb = cell.astype(bool)
        cyt = cb & ~nb
    return CellMasks._trusted(nb, cyt, True, {
        "background": [float(v) for v in bg], "separability": sep,
        "nucleus_threshold": float(t_n), "stain_threshold": float(f1),
        "n_lobes": int(keep.sum()), "coherence": coherent, "n_rbc_markers": n_rbc, "factor": f})
