"""numba kernels shared by the families: the cell's bounding box for
:func:`morphocell.features.base.make_crop`, and an interleaved histogram (colour, LBP)."""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["cell_bbox", "hist2"]


@njit(cache=True, nogil=True)
def _row_any(nucleus, cytoplasm, y):
    """Whether row ``y`` of ``nucleus | cytoplasm`` has a set pixel (branch-free: vectorises)."""
    s = np.uint8(0)
    for x in range(nucleus.shape[1]):
        s |= np.uint8(nucleus[y, x]) | np.uint8(cytoplasm[y, x])
    return s != 0


@njit(cache=True, nogil=True)
def cell_bbox(nucleus: np.ndarray, cytoplasm: np.ndarray, out: np.ndarray) -> bool:  # pragma: no cover
    """Bounding box of ``nucleus | cytoplasm`` (bool, same shape) without forming the union:
    ``out = (first row, last row, first column, last column)``; False (``out`` untouched)
    when both masks are empty. Rows are tested from the top and from the bottom until a
    set pixel; the columns come from the OR of the rows in between. Every loop over a row
    is branch-free, so the compiler vectorises it."""
    h, w = nucleus.shape
    r0 = 0
    while r0 < h and not _row_any(nucleus, cytoplasm, r0):
        r0 += 1
    if r0 == h:
        return False
    r1 = h - 1
    while not _row_any(nucleus, cytoplasm, r1):
        r1 -= 1
    col = np.zeros(w, np.uint8)
    for y in range(r0, r1 + 1):
        for x in range(w):
            col[x] |= np.uint8(nucleus[y, x]) | np.uint8(cytoplasm[y, x])
    c0 = 0
    while col[c0] == 0:
        c0 += 1
    c1 = w - 1
    while col[c1] == 0:
        c1 -= 1
    out[0] = r0
    out[1] = r1
    out[2] = c0
    out[3] = c1
    return True


@njit(cache=True, nogil=True)
def hist2(b, k0, k1, h2, out):
    """``out[b[k]] += 1`` for ``k`` in ``[k0, k1)``, counted in two histograms (even / odd
    ``k``, ``h2``: zeros on entry and on return) so that neighbouring pixels in the same bin
    -- the usual case -- do not wait on each other's increment of one counter."""
    k = k0
    while k + 2 <= k1:
        h2[0, b[k]] += 1
        h2[1, b[k + 1]] += 1
        k += 2
    if k < k1:
        h2[0, b[k]] += 1
    for i in range(out.shape[0]):
        out[i] += h2[0, i] + h2[1, i]
        h2[0, i] = 0
        h2[1, i] = 0
