"""numba kernels of the classical segmentation (:mod:`morphocell.segmentation.otsu`).

Every kernel is ``@njit(cache=True, nogil=True)`` and fills arrays that its Python wrapper in
:mod:`~morphocell.segmentation.otsu` allocated (only small scratch arrays, of the size of the
image or its candidate box, are made inside); the wrappers validate and allocate. Kernels
that take many inputs receive them bundled in small tuples whose fields the named tuples
:class:`RbcScene`, :class:`RbcParams`, :class:`MarkerRule` and :class:`Runs` name (numba
compiles them as plain structs; the wrapper passes ``tuple(scene)``: numba types a plain
tuple argument faster than a named one at each call). Each kernel is tested against OpenCV, scikit-image or numpy on real images
(``tests/test_segmentation.py``, ``tests/reference.py``).

Contents: Otsu and 3-class Otsu thresholds of a histogram (:func:`otsu`,
:func:`multi_otsu3`); label-image helpers (:func:`label_areas`, :func:`label_min`,
:func:`labels_hit`, :func:`select_labels`); medians (:func:`background`,
:func:`median_f32`, :func:`masked_median`); the watershed (:func:`flood`); connected
components by row runs (:func:`runs`, :func:`select_fill`); the red-cell markers
(:func:`erode_cross`, :func:`marker_components`, :func:`rbc_markers`); the enlargement of
the masks by 2 (:func:`upscale2`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..features._kernels.select import select_nth

__all__ = [
    "Runs", "MarkerRule", "RbcScene", "RbcParams", "mo3_search", "multi_otsu3", "otsu",
    "label_min", "label_areas", "labels_hit", "select_labels", "median_f32", "masked_median",
    "background", "flood", "erode_cross", "find_root", "alloc_runs", "runs", "select_fill",
    "marker_components", "rbc_markers", "upscale2",
]


class Runs(NamedTuple):
    """Row runs of a mask and a union-find forest over them (:func:`runs`): run ``i`` covers
    columns ``[rx0[i], rx1[i])`` of row ``ry[i]``; ``parent`` links it towards its
    component's root (the component's first run). Made by :func:`alloc_runs`."""

    ry: np.ndarray      # int64
    rx0: np.ndarray     # int64
    rx1: np.ndarray     # int64
    parent: np.ndarray  # int64


class MarkerRule(NamedTuple):
    """Which red-cell-like components become markers (:func:`marker_components`)."""

    min_area: float        # least pixels of a component (after the erosion)
    peak_se: np.ndarray    # uint8 disc of the distance-peak test; shape (0, 0): no peak test
    min_peak: np.float32   # least distance-transform value of a peak
    far: np.float32        # a pixel farther than this from the nucleus also qualifies


class RbcScene(NamedTuple):
    """The arrays step 4 of the classical method reads (:func:`rbc_markers`).

    Working-image arrays: ``fg``, ``cand_full``, ``s8`` (uint8), ``od8`` (uint8, 3
    channels), ``stain`` (float32); box-sized (the box's top-left corner is ``(y0, x0)``):
    ``cand``, ``nuc`` (uint8 0/1), ``dist``, ``dnuc`` (float32 distance transforms of the
    candidate and to the nucleus).
    """

    fg: np.ndarray
    cand_full: np.ndarray
    s8: np.ndarray
    od8: np.ndarray
    stain: np.ndarray
    y0: int
    x0: int
    cand: np.ndarray
    nuc: np.ndarray
    dist: np.ndarray
    dnuc: np.ndarray


class RbcParams(NamedTuple):
    """Thresholds of step 4 (:func:`rbc_markers`), from :class:`~.otsu.OtsuParams` and the
    image; the last four are the :class:`MarkerRule` of a marker. Thresholds compared with
    float32 images are float32 (as numpy compares a float32 array with a Python float)."""

    f1: int                 # lower multi-Otsu threshold of s8 (stained pixels: s8 > f1)
    k: np.float32           # OD per unit of od8 (od_max / 255)
    ring_w: np.float32      # width of the cytoplasm-reference ring (px)
    cyt_quantile: float     # quantile of the ring's chromaticity: the cytoplasm reference
    chroma_gap: float       # red-cell-like: chromaticity above the reference by this
    free_min: float         # least pixels of the free red cells
    stain_tol: float        # markers at most (1 + stain_tol) x the free red cells' stain
    use_free_delta: bool    # markers from the free red cells' colour
    free_delta: float       # ... within this of their chromaticity
    free_ring: np.float32   # ... farther than this from the nucleus
    min_area: float         # MarkerRule.min_area
    peak_se: np.ndarray     # MarkerRule.peak_se
    min_peak: np.float32    # MarkerRule.min_peak
    far: np.float32         # MarkerRule.far


@njit(cache=True, nogil=True)
def mo3_search(w: np.ndarray, m: np.ndarray, i0: int, i1: int, j0: int, j1: int,
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
def multi_otsu3(hist: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
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
    mo3_search(w, m, 1, n, 2, n, 4, out)
    c0 = out[0]
    c1 = out[1]
    mo3_search(w, m, c0 - 6, c0 + 7, c1 - 6, c1 + 7, 1, out)


@njit(cache=True, nogil=True)
def otsu(hist: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
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
def label_min(lab: np.ndarray, val: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[k] = min(val[lab == k])`` (``out`` pre-filled with +inf by the caller)."""
    h, w = lab.shape
    for y in range(h):
        for x in range(w):
            k = lab[y, x]
            if val[y, x] < out[k]:
                out[k] = val[y, x]


@njit(cache=True, nogil=True)
def label_areas(lab: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
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
def labels_hit(lab: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[k] = True`` for every label ``k`` of ``lab`` under a nonzero ``mask`` pixel
    (``out`` pre-filled with False)."""
    h, w = lab.shape
    for y in range(h):
        for x in range(w):
            if mask[y, x]:
                out[lab[y, x]] = True


@njit(cache=True, nogil=True)
def select_labels(lab: np.ndarray, keep: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out = keep[lab]`` as uint8 0/1."""
    h, w = lab.shape
    for y in range(h):
        for x in range(w):
            out[y, x] = 1 if keep[lab[y, x]] else 0


@njit(cache=True, nogil=True)
def median_f32(buf: np.ndarray, n: int):  # pragma: no cover - compiled
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
def masked_median(val: np.ndarray, mask: np.ndarray, buf: np.ndarray):  # pragma: no cover
    """``np.median(val[mask != 0])`` of a float32 image (:func:`median_f32`; ``buf``: float32
    scratch of at least ``val.size``)."""
    h, w = val.shape
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] != 0:
                buf[n] = val[y, x]
                n += 1
    return median_f32(buf, n)


@njit(cache=True, nogil=True)
def background(img: np.ndarray, step: int, q: float, out: np.ndarray) -> None:  # pragma: no cover
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
def flood(relief: np.ndarray, labels: np.ndarray, nxt: np.ndarray, head: np.ndarray,
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
def erode_cross(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover
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
def find_root(parent: np.ndarray, i: int) -> int:  # pragma: no cover - compiled
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def alloc_runs(h: int, w: int) -> Runs:  # pragma: no cover - compiled
    """:class:`Runs` buffers for any mask of ``h`` x ``w`` pixels (at most ``(w + 1) // 2``
    runs a row, plus one)."""
    m = h * ((w + 1) // 2) + h + 1
    return Runs(np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.int64),
                np.empty(m, np.int64))


@njit(cache=True, nogil=True)
def runs(a: np.ndarray, b: np.ndarray, value: bool, diagonal: bool,
         r: Runs) -> int:  # pragma: no cover - compiled
    """Connected components by row runs: fills ``r`` (:class:`Runs`, from :func:`alloc_runs`)
    with the runs, in raster order, of the pixels where ``(a != 0) | (b != 0)`` equals
    ``value`` and a union-find forest over them (a root is its component's first run). Runs
    of neighbouring rows are joined when they share a column, or with ``diagonal``
    (8-connectivity) also when they touch diagonally. Returns the number of runs."""
    ry, rx0, rx1, parent = r
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
                r1 = find_root(parent, i)
                r2 = find_root(parent, jj)
                if r1 < r2:
                    parent[r2] = r1
                elif r2 < r1:
                    parent[r1] = r2
                jj += 1
        prev0 = cur0
        prev1 = n
    return n


@njit(cache=True, nogil=True)
def select_fill(a: np.ndarray, b: np.ndarray, seed: np.ndarray, use_seed: bool,
                fill: bool, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out`` (uint8 0/1, zeros on entry) = the mask ``m = (a != 0) | (b != 0)``, or with
    ``use_seed`` only its 8-connected components that hold a pixel where ``seed != 0``;
    with ``fill`` its holes filled: the 4-connected components of its background that do
    not reach the array border (what ``cv2.floodFill`` from the border of the zero-padded
    mask leaves). Both by row runs and union-find over them."""
    h, w = a.shape
    r = alloc_runs(h, w)
    ry, rx0, rx1, parent = r
    if use_seed:
        n = runs(a, b, True, True, r)
        hit = np.zeros(n, np.bool_)
        for i in range(n):
            y = ry[i]
            for x in range(rx0[i], rx1[i]):
                if seed[y, x] != 0:
                    hit[find_root(parent, i)] = True
                    break
        for i in range(n):
            if hit[find_root(parent, i)]:
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
    n = runs(out, out, False, False, r)
    border = np.zeros(n, np.bool_)
    for i in range(n):
        if ry[i] == 0 or ry[i] == h - 1 or rx0[i] == 0 or rx1[i] == w:
            border[find_root(parent, i)] = True
    for i in range(n):
        if not border[find_root(parent, i)]:
            y = ry[i]
            for x in range(rx0[i], rx1[i]):
                out[y, x] = 1


@njit(cache=True, nogil=True)
def marker_components(like: np.ndarray, work: np.ndarray, dist: np.ndarray, dnuc: np.ndarray,
                      rule: MarkerRule, peak_test: bool,
                      markers: np.ndarray) -> int:  # pragma: no cover - compiled
    """Red-cell markers from the red-cell-like pixels ``like`` (uint8 0/1, box-sized): the
    8-connected components of ``like`` eroded by the 3 x 3 cross with at least
    ``rule.min_area`` pixels -- and, with ``peak_test`` and a non-empty ``rule.peak_se``,
    holding a pixel that is a peak of ``dist`` (``dist >=`` its grey dilation by ``peak_se``,
    and ``dist >= rule.min_peak``) or lies farther than ``rule.far`` from the nucleus
    (``dnuc > far``) -- are set to 2 in ``markers``; returns their number. ``work``:
    box-sized uint8 scratch."""
    min_area, peak_se, min_peak, far = rule
    hb, wb = like.shape
    erode_cross(like, work)
    rr = alloc_runs(hb, wb)
    ry, rx0, rx1, parent = rr
    n = runs(work, work, True, True, rr)
    area = np.zeros(n, np.int64)
    for i in range(n):
        parent[i] = find_root(parent, i)
        area[parent[i]] += rx1[i] - rx0[i]
    ok = np.zeros(n, np.bool_)
    count = 0
    for i in range(n):
        if parent[i] == i and area[i] >= min_area:
            ok[i] = True
            count += 1
    if count == 0:
        return 0
    if peak_test and peak_se.shape[0] > 0:
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
def rbc_markers(scene: RbcScene, prm: RbcParams,
                markers: np.ndarray) -> int:  # pragma: no cover - compiled
    """Step 4 of :func:`~morphocell.segmentation.otsu.segment_otsu` (red-cell markers a and
    b of its module docstring) after the two distance transforms, in one call: fills
    ``markers`` (int32, box-sized: -1 outside the candidate, 0 inside, 2 on red-cell
    markers, 1 on the nucleus) and returns the number of red-cell markers. ``scene`` and
    ``prm`` hold the fields of :class:`RbcScene` and :class:`RbcParams` (plain or named
    tuples). The chromaticity ``OD_B / stain`` is ``float32(od8[..., 2]) * k / (stain +
    1e-3)`` in float32."""
    fg, cand_full, s8, od8, stain, y0, x0, cand0, nuc, dist, dnuc = scene
    (f1, k, ring_w, cyt_quantile, chroma_gap, free_min, stain_tol, use_free_delta, free_delta,
     free_ring, min_area, peak_se, min_peak, far) = prm
    rule = MarkerRule(min_area, peak_se, min_peak, far)
    hb, wb = cand0.shape
    h, w = s8.shape
    eps = np.float32(1e-3)
    chroma = np.empty((hb, wb), np.float32)
    rest = np.empty((hb, wb), np.uint8)
    erode_cross(cand0, rest)
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
        erode_cross(free, efree)
        n_free = 0
        for y in range(h):
            for x in range(w):
                if efree[y, x] != 0:
                    vals[n_free] = np.float32(od8[y, x, 2]) * k / (stain[y, x] + eps)
                    n_free += 1
        have_free = n_free >= free_min
        rbc_ref = np.float32(0.0)
        if have_free:
            rbc_ref = median_f32(vals, n_free)
            rbc_stain = masked_median(stain, efree, vals)
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
        n_rbc += marker_components(like, work, dist, dnuc, rule, True, markers)
        if use_free_delta and have_free:
            nuc_ref = masked_median(chroma, nuc, vals)
            if np.float64(rbc_ref) - np.float64(nuc_ref) >= chroma_gap:
                cmin2 = np.float32(np.float64(rbc_ref) - free_delta)
                for y in range(hb):
                    for x in range(wb):
                        like[y, x] = rest[y, x] & (dnuc[y, x] > free_ring) & (chroma[y, x] > cmin2)
                n_rbc += marker_components(like, work, dist, dnuc, rule, False, markers)
    for y in range(hb):
        for x in range(wb):
            if nuc[y, x] != 0:
                markers[y, x] = 1
    return n_rbc


@njit(cache=True, nogil=True)
def upscale2(nucleus: np.ndarray, cell: np.ndarray, y0: int, y1: int, x0: int, x1: int,
             nb: np.ndarray, cyt: np.ndarray) -> None:  # pragma: no cover - compiled
    """Working-scale 0/1 ``nucleus`` and ``cell`` masks (all their pixels in rows
    ``[y0, y1)``, columns ``[x0, x1)``) enlarged by 2 into the zero-filled bool images ``nb``
    (nucleus) and ``cyt`` (cell and not nucleus) of the original size, as the wrapper's
    ``_upscale_box`` does: for the factor 2 the linear interpolation of a 0/255 mask
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


