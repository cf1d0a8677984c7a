"""Classical nucleus / cytoplasm segmentation (no training needed).

All thresholds are chosen per image (Otsu / multi-Otsu); the fixed parameters live in
:class:`OtsuParams` and are documented there and in ``docs/segmentation.md``. They were
tuned on the even-numbered images of both segwbc datasets only.

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
from numba import njit

from ..features._kernels.select import select_nth
from .._utils import cv2_one_thread
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


# ----------------------------------------------------------------------------- kernels
@njit(cache=True, nogil=True)
def _mo3_search(w: np.ndarray, m: np.ndarray, i0: int, i1: int, j0: int, j1: int,
                step: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Best pair ``i < j`` (``i`` in ``[i0, i1)``, ``j`` in ``[j0, j1)``, stride ``step``)
    of ``sum_k m_k^2 / w_k`` from cumulative weights ``w`` and moments ``m``."""
    n = w.shape[0]
    wt = w[n - 1]
    mt = m[n - 1]
    best = -1.0
    for i in range(max(i0, 0), min(i1, n - 2), step):
        w0 = w[i]
        if w0 <= 0:
            continue
        s0 = m[i] * m[i] / w0
        for j in range(max(j0, i + 1), min(j1, n - 1), step):
            w1 = w[j] - w0
            w2 = wt - w[j]
            if w1 <= 0 or w2 <= 0:
                continue
            m1 = m[j] - m[i]
            m2 = mt - m[j]
            v = s0 + m1 * m1 / w1 + m2 * m2 / w2
            if v > best:
                best = v
                out[0] = i
                out[1] = j


@njit(cache=True, nogil=True)
def _multi_otsu3_kernel(hist: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """Fill ``out[0:2]`` with the 3-class Otsu thresholds of a 256-bin histogram.

    Classes ``[0, t1]``, ``(t1, t2]``, ``(t2, 255]``; maximises ``sum_k m_k^2 / w_k``
    (``w_k`` class weight, ``m_k`` class first moment), which is the between-class variance
    up to a constant (Liao, Chen & Chung 2001). Coarse-to-fine: every 4th pair first, then
    all pairs within +-6 levels of the coarse optimum (the criterion is smooth in the
    thresholds, so this finds the exhaustive optimum on real histograms at 1/14 the cost).
    """
    n = hist.shape[0]
    w = np.empty(n)
    m = np.empty(n)
    acc_w = 0.0
    acc_m = 0.0
    for i in range(n):
        acc_w += hist[i]
        acc_m += hist[i] * i
        w[i] = acc_w
        m[i] = acc_m
    out[0] = 0
    out[1] = 0
    _mo3_search(w, m, 1, n, 2, n, 4, out)
    c0 = out[0]
    c1 = out[1]
    _mo3_search(w, m, c0 - 6, c0 + 7, c1 - 6, c1 + 7, 1, out)


@njit(cache=True, nogil=True)
def _otsu_kernel(hist: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out = [t, separability, mean of the lower class]`` for a 256-bin histogram.

    ``t`` maximises the between-class variance ``(mt w0 - m0)^2 / (w0 (1 - w0))``
    (Otsu 1979, normalised histogram); separability is that maximum over the total
    variance (0: no structure, 1: two spikes).
    """
    n = hist.shape[0]
    tot = 0.0
    mt = 0.0
    for i in range(n):
        tot += hist[i]
        mt += hist[i] * i
    out[0] = 0.0
    out[1] = 0.0
    out[2] = 0.0
    if tot <= 0:
        return
    mt /= tot
    var_t = 0.0
    for i in range(n):
        var_t += hist[i] / tot * (i - mt) ** 2
    w0 = 0.0
    m0 = 0.0
    best = -1.0
    for i in range(n - 1):
        w0 += hist[i] / tot
        m0 += hist[i] / tot * i
        if w0 <= 0 or w0 >= 1:
            continue
        sb = (mt * w0 - m0) ** 2 / (w0 * (1.0 - w0))
        if sb > best:
            best = sb
            out[0] = i
            out[2] = m0 / w0
    if var_t > 0 and best > 0:
        out[1] = best / var_t


@njit(cache=True, nogil=True)
def _label_min_kernel(lab: np.ndarray, val: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[k] = min(val[lab == k])`` (``out`` pre-filled with +inf by the caller)."""
    h, w = lab.shape
    for y in range(h):
        for x in range(w):
            k = lab[y, x]
            if val[y, x] < out[k]:
                out[k] = val[y, x]


@njit(cache=True, nogil=True)
def _label_areas_kernel(lab: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[k] += count(lab == k)`` (``np.bincount`` of a label image). Runs of one label
    are counted in a register first: one increment of ``out`` per run instead of a chain of
    dependent read-modify-writes of the same counter along the background."""
    h, w = lab.shape
    for y in range(h):
        cur = lab[y, 0]
        run = 0
        for x in range(w):
            v = lab[y, x]
            if v == cur:
                run += 1
            else:
                out[cur] += run
                cur = v
                run = 1
        out[cur] += run


@njit(cache=True, nogil=True)
def _labels_hit_kernel(lab: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[k] = True`` for every label ``k`` of ``lab`` under a nonzero ``mask`` pixel
    (``out`` pre-filled with False)."""
    h, w = lab.shape
    for y in range(h):
        for x in range(w):
            if mask[y, x]:
                out[lab[y, x]] = True


@njit(cache=True, nogil=True)
def _select_labels_kernel(lab: np.ndarray, keep: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out = keep[lab]`` as uint8 0/1."""
    h, w = lab.shape
    for y in range(h):
        for x in range(w):
            out[y, x] = 1 if keep[lab[y, x]] else 0


@njit(cache=True, nogil=True)
def _median_f32(buf: np.ndarray, n: int):  # pragma: no cover - compiled
    """``np.median(buf[:n])`` of float32 values: the middle value, or for an even ``n`` the
    float32 mean of the two middle ones; NaN when ``n == 0``. ``buf`` is left unchanged."""
    if n == 0:
        return np.float32(np.nan)
    k = n // 2
    hi = select_nth(buf, n, k, np.empty(n, np.float32), np.empty(n, np.float32))
    if n % 2 == 1:
        return hi
    # the (k-1)-th smallest: below hi when at least k values are, else hi itself
    below = 0
    lo = hi
    for i in range(n):
        x = buf[i]
        if x < hi:
            below += 1
            lo = x if below == 1 or x > lo else lo
    if below < k:
        lo = hi
    return (lo + hi) / np.float32(2.0)


@njit(cache=True, nogil=True)
def _masked_median_kernel(val: np.ndarray, mask: np.ndarray, buf: np.ndarray):  # pragma: no cover
    """``np.median(val[mask != 0])`` of a float32 image (:func:`_median_f32`; ``buf``: float32
    scratch of at least ``val.size``)."""
    h, w = val.shape
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] != 0:
                buf[n] = val[y, x]
                n += 1
    return _median_f32(buf, n)


@njit(cache=True, nogil=True)
def _background_kernel(img: np.ndarray, step: int, q: float, out: np.ndarray) -> None:  # pragma: no cover
    """Per-channel median (``np.median``, float64) of the pixels of ``img[::step, ::step]``
    whose R + G + B is at least the ``k``-th smallest such sum, ``k = min(n - 1,
    int(n (1 - q)))`` (the brightest ``q`` share and its ties), from histograms."""
    h, w, _ = img.shape
    hs = np.zeros(766, np.int64)
    n = 0
    for y in range(0, h, step):
        for x in range(0, w, step):
            hs[np.int64(img[y, x, 0]) + np.int64(img[y, x, 1]) + np.int64(img[y, x, 2])] += 1
            n += 1
    k = min(n - 1, int(n * (1.0 - q)))
    cum = 0
    t = 0
    for v in range(766):
        cum += hs[v]
        if cum > k:
            t = v
            break
    hc = np.zeros((3, 256), np.int64)
    m = 0
    for y in range(0, h, step):
        for x in range(0, w, step):
            if np.int64(img[y, x, 0]) + np.int64(img[y, x, 1]) + np.int64(img[y, x, 2]) >= t:
                hc[0, img[y, x, 0]] += 1
                hc[1, img[y, x, 1]] += 1
                hc[2, img[y, x, 2]] += 1
                m += 1
    for c in range(3):
        # order statistics m // 2 (and m // 2 - 1 for an even m) from the histogram
        want_hi = m // 2
        want_lo = want_hi - 1 if m % 2 == 0 else want_hi
        lo_v = -1
        hi_v = -1
        cum = 0
        for v in range(256):
            cum += hc[c, v]
            if lo_v < 0 and cum > want_lo:
                lo_v = v
            if cum > want_hi:
                hi_v = v
                break
        out[c] = (np.float64(lo_v) + np.float64(hi_v)) / 2.0


@njit(cache=True, nogil=True)
def _flood_kernel(relief: np.ndarray, labels: np.ndarray, nxt: np.ndarray, head: np.ndarray,
                  tail: np.ndarray) -> None:  # pragma: no cover - compiled
    """Marker-controlled watershed by priority flooding (Meyer 1991) on a uint8 relief.

    ``labels`` (int32, h x w) holds the markers (> 0), pixels to fill (0) and pixels that
    must stay unlabelled (-1); it is filled in place. A pixel takes the label of the
    neighbour that reaches it first; it is queued at level ``max(relief, current level)``
    in a 256-level bucket queue (``head``/``tail``/``nxt``: caller-allocated linked
    lists), so the flooding is O(pixels). 4-connectivity.
    """
    h, w = relief.shape
    for lv in range(256):
        head[lv] = -1
        tail[lv] = -1
    for y in range(h):
        for x in range(w):
            if labels[y, x] > 0:
                i = y * w + x
                lv = relief[y, x]
                nxt[i] = -1
                if tail[lv] < 0:
                    head[lv] = i
                else:
                    nxt[tail[lv]] = i
                tail[lv] = i
    level = 0
    while level < 256:
        i = head[level]
        if i < 0:
            level += 1
            continue
        head[level] = nxt[i]
        if head[level] < 0:
            tail[level] = -1
        y = i // w
        x = i - y * w
        lab = labels[y, x]
        for k in range(4):
            yy = y + (k == 1) - (k == 0)
            xx = x + (k == 3) - (k == 2)
            if yy < 0 or yy >= h or xx < 0 or xx >= w or labels[yy, xx] != 0:
                continue
            labels[yy, xx] = lab
            lv = relief[yy, xx]
            if lv < level:
                lv = level
            j = yy * w + xx
            nxt[j] = -1
            if tail[lv] < 0:
                head[lv] = j
            else:
                nxt[tail[lv]] = j
            tail[lv] = j


@njit(cache=True, nogil=True)
def _erode_cross_kernel(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover
    """``dst`` = 0/1 ``src`` eroded by the 3 x 3 cross (``_disc(1)``), uint8; outside the
    array counts as set (OpenCV's default border value for an erosion), so a missing
    neighbour is replaced by the pixel itself. Branch-free rows (they vectorise)."""
    h, w = src.shape
    for y in range(h):
        yu = max(y - 1, 0)
        yd = min(y + 1, h - 1)
        if w == 1:
            dst[y, 0] = src[y, 0] & src[yu, 0] & src[yd, 0]
            continue
        dst[y, 0] = src[y, 0] & src[yu, 0] & src[yd, 0] & src[y, 1]
        for x in range(1, w - 1):
            dst[y, x] = src[y, x] & src[yu, x] & src[yd, x] & src[y, x - 1] & src[y, x + 1]
        dst[y, w - 1] = src[y, w - 1] & src[yu, w - 1] & src[yd, w - 1] & src[y, w - 2]


@njit(cache=True, nogil=True)
def _find_root(parent: np.ndarray, i: int) -> int:  # pragma: no cover - compiled
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _runs(a: np.ndarray, b: np.ndarray, value: bool, diagonal: bool, ry: np.ndarray,
          rx0: np.ndarray, rx1: np.ndarray, parent: np.ndarray) -> int:  # pragma: no cover
    """Connected components by row runs: the runs ``[rx0, rx1)`` of row ``ry`` (raster order)
    of the pixels where ``(a != 0) | (b != 0)`` equals ``value`` and, in ``parent``, a
    union-find forest over them (a root is its component's first run). Runs of neighbouring
    rows are joined when they share a column, or with ``diagonal`` (8-connectivity) also
    when they touch diagonally. Returns the number of runs; buffers hold at least
    ``h * ((w + 1) // 2) + h + 1`` entries."""
    h, w = a.shape
    t = 1 if diagonal else 0
    n = 0
    prev0 = 0  # runs of the previous row: [prev0, prev1)
    prev1 = 0
    for y in range(h):
        cur0 = n
        x = 0
        while x < w:
            if ((a[y, x] != 0) | (b[y, x] != 0)) != value:
                x += 1
                continue
            x0 = x
            while x < w and ((a[y, x] != 0) | (b[y, x] != 0)) == value:
                x += 1
            ry[n] = y
            rx0[n] = x0
            rx1[n] = x
            parent[n] = n
            n += 1
        j = prev0
        for i in range(cur0, n):
            # previous-row runs that end before this run's reach cannot touch it nor any
            # later run of this row
            while j < prev1 and rx1[j] + t <= rx0[i]:
                j += 1
            jj = j
            while jj < prev1 and rx0[jj] < rx1[i] + t:
                r1 = _find_root(parent, i)
                r2 = _find_root(parent, jj)
                if r1 < r2:
                    parent[r2] = r1
                elif r2 < r1:
                    parent[r1] = r2
                jj += 1
        prev0 = cur0
        prev1 = n
    return n


@njit(cache=True, nogil=True)
def _select_fill_kernel(a: np.ndarray, b: np.ndarray, seed: np.ndarray, use_seed: bool,
                        fill: bool, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out`` (uint8 0/1, zeros on entry) = the mask ``m = (a != 0) | (b != 0)``, or with
    ``use_seed`` only its 8-connected components that hold a pixel where ``seed != 0``;
    with ``fill`` its holes filled: the 4-connected components of its background that do
    not reach the array border (what ``cv2.floodFill`` from the border of the zero-padded
    mask leaves). Both by row runs and union-find over them."""
    h, w = a.shape
    m = h * ((w + 1) // 2) + h + 1
    ry = np.empty(m, np.int64)
    rx0 = np.empty(m, np.int64)
    rx1 = np.empty(m, np.int64)
    parent = np.empty(m, np.int64)
    if use_seed:
        n = _runs(a, b, True, True, ry, rx0, rx1, parent)
        hit = np.zeros(n, np.bool_)
        for i in range(n):
            y = ry[i]
            for x in range(rx0[i], rx1[i]):
                if seed[y, x] != 0:
                    hit[_find_root(parent, i)] = True
                    break
        for i in range(n):
            if hit[_find_root(parent, i)]:
                y = ry[i]
                for x in range(rx0[i], rx1[i]):
                    out[y, x] = 1
    else:
        for y in range(h):
            for x in range(w):
                out[y, x] = (a[y, x] != 0) | (b[y, x] != 0)
    if not fill:
        return
    # background runs of out, 4-connected; a root reaching the border is not a hole
    n = _runs(out, out, False, False, ry, rx0, rx1, parent)
    border = np.zeros(n, np.bool_)
    for i in range(n):
        if ry[i] == 0 or ry[i] == h - 1 or rx0[i] == 0 or rx1[i] == w:
            border[_find_root(parent, i)] = True
    for i in range(n):
        if not border[_find_root(parent, i)]:
            y = ry[i]
            for x in range(rx0[i], rx1[i]):
                out[y, x] = 1


@njit(cache=True, nogil=True)
def _marker_components(like: np.ndarray, work: np.ndarray, min_area: float,
                       dist: np.ndarray, dnuc: np.ndarray, peak_se: np.ndarray,
                       min_peak: np.float32, far: np.float32, markers: np.ndarray) -> int:  # pragma: no cover
    """Red-cell markers from the red-cell-like pixels ``like`` (uint8 0/1, box-sized): the
    8-connected components of ``like`` eroded by the 3 x 3 cross with at least ``min_area``
    pixels -- and, when ``peak_se`` is not empty, holding a pixel that is a peak of ``dist``
    (``dist >= `` its grey dilation by ``peak_se``, and ``dist >= min_peak``) or lies
    farther than ``far`` from the nucleus (``dnuc > far``) -- are set to 2 in ``markers``;
    returns their number. ``work``: box-sized uint8 scratch."""
    hb, wb = like.shape
    _erode_cross_kernel(like, work)
    m = hb * ((wb + 1) // 2) + hb + 1
    ry = np.empty(m, np.int64)
    rx0 = np.empty(m, np.int64)
    rx1 = np.empty(m, np.int64)
    parent = np.empty(m, np.int64)
    n = _runs(work, work, True, True, ry, rx0, rx1, parent)
    area = np.zeros(n, np.int64)
    for i in range(n):
        parent[i] = _find_root(parent, i)
        area[parent[i]] += rx1[i] - rx0[i]
    ok = np.zeros(n, np.bool_)
    count = 0
    for i in range(n):
        if parent[i] == i and area[i] >= min_area:
            ok[i] = True
            count += 1
    if count == 0:
        return 0
    if peak_se.shape[0] > 0:
        r = peak_se.shape[0] // 2
        hit = np.zeros(n, np.bool_)
        for i in range(n):
            c = parent[i]
            if not ok[c] or hit[c]:
                continue
            y = ry[i]
            for x in range(rx0[i], rx1[i]):
                if dnuc[y, x] > far:
                    hit[c] = True
                    break
                v = dist[y, x]
                if v < min_peak:
                    continue
                peak = True  # dist >= cv2.dilate(dist, peak_se): no larger value in reach
                for dy in range(-r, r + 1):
                    yy = y + dy
                    if yy < 0 or yy >= hb:
                        continue  # outside is ignored (OpenCV's border value for a dilation)
                    for dx in range(-r, r + 1):
                        xx = x + dx
                        if xx >= 0 and xx < wb and peak_se[dy + r, dx + r] != 0 \
                                and dist[yy, xx] > v:
                            peak = False
                    if not peak:
                        break
                if peak:
                    hit[c] = True
                    break
        count = 0
        for i in range(n):
            if ok[i] and not hit[i]:
                ok[i] = False
            if ok[i]:
                count += 1
    for i in range(n):
        if ok[parent[i]]:
            y = ry[i]
            for x in range(rx0[i], rx1[i]):
                markers[y, x] = 2
    return count


@njit(cache=True, nogil=True)
def _rbc_markers_kernel(fg: np.ndarray, cand_full: np.ndarray, s8: np.ndarray, od8: np.ndarray,
                        stain: np.ndarray, f1: int, k: np.float32, y0: int, x0: int,
                        cand0: np.ndarray, nuc: np.ndarray, dist: np.ndarray, dnuc: np.ndarray,
                        ring_w: np.float32, cyt_quantile: float, chroma_gap: float,
                        free_min: float, stain_tol: float, min_area: float,
                        peak_se: np.ndarray, min_peak: np.float32, far: np.float32,
                        use_free_delta: bool, free_delta: float, free_ring: np.float32,
                        markers: np.ndarray) -> int:  # pragma: no cover - compiled
    """Step 4 of :func:`segment_otsu` (red-cell markers a and b of the module docstring)
    after the two distance transforms, in one call: fills ``markers`` (int32, box-sized:
    -1 outside the candidate, 0 inside, 2 on red-cell markers, 1 on the nucleus) and
    returns the number of red-cell markers.

    Full-image arrays: ``fg``, ``cand_full``, ``s8`` (uint8), ``od8`` (uint8, 3 channels),
    ``stain`` (float32); box-sized (the box starts at ``(y0, x0)``): ``cand0``, ``nuc``
    (uint8 0/1), ``dist``, ``dnuc`` (float32). Thresholds compared with float32 images are
    float32 (as numpy compares a float32 array with a Python float). The chromaticity
    ``OD_B / stain`` is ``float32(od8[..., 2]) * k / (stain + 1e-3)`` in float32."""
    hb, wb = cand0.shape
    h, w = s8.shape
    eps = np.float32(1e-3)
    chroma = np.empty((hb, wb), np.float32)
    rest = np.empty((hb, wb), np.uint8)
    _erode_cross_kernel(cand0, rest)
    vals = np.empty(max(hb * wb, h * w), np.float32)
    n_ring = 0
    for y in range(hb):
        for x in range(wb):
            markers[y, x] = np.int32(cand0[y, x]) - 1
            chroma[y, x] = np.float32(od8[y0 + y, x0 + x, 2]) * k / (stain[y0 + y, x0 + x] + eps)
            rest[y, x] &= (nuc[y, x] == 0) & (s8[y0 + y, x0 + x] > f1)
        for x in range(wb):
            if rest[y, x] != 0 and dnuc[y, x] <= ring_w:
                vals[n_ring] = chroma[y, x]
                n_ring += 1
    n_rbc = 0
    if n_ring >= 8:
        q = int(cyt_quantile * (n_ring - 1))
        cyt_ref = select_nth(vals, n_ring, q, np.empty(n_ring, np.float32),
                             np.empty(n_ring, np.float32))
        # red cells lying free in the field: stained foreground outside the candidate
        free = np.empty((h, w), np.uint8)
        for y in range(h):
            for x in range(w):
                free[y, x] = (fg[y, x] != 0) & (cand_full[y, x] == 0) & (s8[y, x] > f1)
        efree = np.empty((h, w), np.uint8)
        _erode_cross_kernel(free, efree)
        n_free = 0
        for y in range(h):
            for x in range(w):
                if efree[y, x] != 0:
                    vals[n_free] = np.float32(od8[y, x, 2]) * k / (stain[y, x] + eps)
                    n_free += 1
        have_free = n_free >= free_min
        rbc_ref = np.float32(0.0)
        if have_free:
            rbc_ref = _median_f32(vals, n_free)
            rbc_stain = _masked_median_kernel(stain, efree, vals)
            # a red cell is not much denser than the free ones (eosinophil granules are)
            smax = np.float32(np.float64(rbc_stain) * (1.0 + stain_tol))
            for y in range(hb):
                for x in range(wb):
                    rest[y, x] &= stain[y0 + y, x0 + x] <= smax
        cmin = np.float32(np.float64(cyt_ref) + chroma_gap)
        like = np.empty((hb, wb), np.uint8)
        for y in range(hb):
            for x in range(wb):
                like[y, x] = rest[y, x] & (chroma[y, x] > cmin) & (dnuc[y, x] > ring_w)
        work = np.empty((hb, wb), np.uint8)
        n_rbc += _marker_components(like, work, min_area, dist, dnuc, peak_se, min_peak, far,
                                    markers)
        if use_free_delta and have_free:
            nuc_ref = _masked_median_kernel(chroma, nuc, vals)
            if np.float64(rbc_ref) - np.float64(nuc_ref) >= chroma_gap:
                cmin2 = np.float32(np.float64(rbc_ref) - free_delta)
                for y in range(hb):
                    for x in range(wb):
                        like[y, x] = rest[y, x] & (dnuc[y, x] > free_ring) & (chroma[y, x] > cmin2)
                n_rbc += _marker_components(like, work, min_area, dist, dnuc, peak_se[:0, :0],
                                            min_peak, far, markers)
    for y in range(hb):
        for x in range(wb):
            if nuc[y, x] != 0:
                markers[y, x] = 1
    return n_rbc


@njit(cache=True, nogil=True)
def _upscale2_kernel(nucleus: np.ndarray, cell: np.ndarray, y0: int, y1: int, x0: int, x1: int,
                     nb: np.ndarray, cyt: np.ndarray) -> None:  # pragma: no cover - compiled
    """Working-scale 0/1 ``nucleus`` and ``cell`` masks (all their pixels in rows
    ``[y0, y1)``, columns ``[x0, x1)``) enlarged by 2 into the zero-filled bool images ``nb``
    (nucleus) and ``cyt`` (cell and not nucleus) of the original size, as
    :func:`_upscale_box` does: for the factor 2 the linear interpolation of a 0/255 mask
    thresholded at 128 is pixel replication (an output pixel weighs its nearest source pixel
    9/16 and the other three 7/16 together; tested against OpenCV), and the rows / columns
    below / right of twice the working size repeat the last ones."""
    h, w = nucleus.shape
    H, W = nb.shape
    Hc = 2 * h
    Wc = 2 * w
    for yy in range(2 * y0, 2 * y1):
        y = yy >> 1
        for xx in range(2 * x0, 2 * x1):
            x = xx >> 1
            n = nucleus[y, x] != 0
            nb[yy, xx] = n
            cyt[yy, xx] = (cell[y, x] != 0) and not n
    if y1 == h:
        for yy in range(Hc, H):
            for xx in range(2 * x0, 2 * x1):
                nb[yy, xx] = nb[Hc - 1, xx]
                cyt[yy, xx] = cyt[Hc - 1, xx]
    if x1 == w:
        for yy in range(H):
            for xx in range(Wc, W):
                nb[yy, xx] = nb[yy, Wc - 1]
                cyt[yy, xx] = cyt[yy, Wc - 1]


# ---------------------------------------------------------------------------- wrappers
def flood(relief: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Marker-controlled watershed of a uint8 ``relief`` (see :func:`_flood_kernel`).

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
    _flood_kernel(relief, labels, np.empty(relief.size, np.int64), np.empty(256, np.int64),
                  np.empty(256, np.int64))


def multi_otsu3(values: np.ndarray) -> tuple[int, int]:
    """3-class Otsu thresholds ``(t1, t2)`` of uint8 ``values``: classes ``<= t1``,
    ``(t1, t2]``, ``> t2`` (the same as ``skimage.filters.threshold_multiotsu(classes=3)``
    up to its ``>``/``>=`` convention)."""
    return _multi_otsu3_hist(_hist256(values))


def _multi_otsu3_hist(hist: np.ndarray) -> tuple[int, int]:
    out = np.zeros(2, np.int64)
    _multi_otsu3_kernel(hist, out)
    return int(out[0]), int(out[1])


def otsu_threshold(values: np.ndarray) -> tuple[int, float, float]:
    """Otsu threshold of uint8 ``values`` (class 0: ``<= t``) with its separability
    ``sigma_B^2 / sigma_T^2`` in [0, 1] and the mean of the lower class."""
    return _otsu_hist(_hist256(values))


def _otsu_hist(hist: np.ndarray) -> tuple[int, float, float]:
    out = np.zeros(3, np.float64)
    _otsu_kernel(hist, out)
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
    _background_kernel(np.ascontiguousarray(img, np.uint8), int(step), float(q), out)
    return out


_NO_SE = np.zeros((0, 0), np.uint8)  # "no peak test" for _rbc_markers_kernel


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
    border). One compiled pass (:func:`_select_fill_kernel`); tested against OpenCV's
    labelling and flood fill (``tests/reference.py``)."""
    a = np.ascontiguousarray(a)
    out = np.zeros(a.shape, np.uint8)
    _select_fill_kernel(a, a if b is None else np.ascontiguousarray(b),
                        a if seed is None else np.ascontiguousarray(seed), seed is not None,
                        fill, out)
    return out


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components of a uint8 0/1 mask: (count incl. background, labels, areas)."""
    import cv2

    n, lab = cv2.connectedComponents(mask, connectivity=8)
    area = np.zeros(n, np.int64)
    _label_areas_kernel(lab, area)
    return n, lab, area


def _labels_hit(lab: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Boolean ``(n,)``: labels of ``lab`` that have a pixel under a nonzero ``mask``
    (``np.bincount(lab[mask > 0], minlength=n) > 0``)."""
    out = np.zeros(n, np.bool_)
    _labels_hit_kernel(lab, np.ascontiguousarray(mask), out)
    return out


def _select_labels(lab: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """uint8 0/1 image of the pixels whose label is kept (``keep[lab]``)."""
    out = np.empty(lab.shape, np.uint8)
    _select_labels_kernel(lab, keep, out)
    return out


def _hist256(values: np.ndarray) -> np.ndarray:
    import cv2

    v = np.ascontiguousarray(values, np.uint8)
    if v.ndim == 1:
        v = v.reshape(1, -1)
    return cv2.calcHist([v], [0], None, [256], [0, 256]).ravel().astype(np.float64)


def _label_min(lab: np.ndarray, val: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.inf, np.float32)
    _label_min_kernel(lab, np.ascontiguousarray(val, np.float32), out)
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
    # the markers of step 5 in one compiled call (_rbc_markers_kernel)
    markers = np.empty(cand0.shape, np.int32)
    y0, x0 = box[0].start, box[1].start
    n_rbc = _rbc_markers_kernel(
        fg, cand_full, s8, od8, stain, int(f1), k, y0, x0, cand0, nuc, dist, dnuc,
        np.float32(ring_w), float(p.cyt_quantile), float(p.rbc_chroma_gap),
        float(p.free_rbc_min_area * n_area), float(p.rbc_stain_tol), float(p.rbc_min_area * n_area),
        _disc(p.peak_radius) if p.peak_radius > 0 else _NO_SE, np.float32(p.min_rbc_radius),
        np.float32(p.far_factor * r_n), p.free_rbc_delta is not None,
        float(p.free_rbc_delta or 0.0), np.float32(p.free_rbc_ring), markers)

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
        _upscale2_kernel(nucleus, cell, box[0].start, box[0].stop, box[1].start, box[1].stop,
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
