"""numba kernels shared by the families: the cell's bounding box for
:func:`morphocell.features.base.make_crop`, and an interleaved histogram (colour, LBP)."""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["cell_bbox", "hist2"]


@njit(cache=True, nogil=True)
def cell_bbox(nucleus: np.ndarray, cytoplasm: np.ndarray, out: np.ndarray) -> bool:  # pragma: no cover
    """Bounding box of ``nucleus | cytoplasm`` (bool, same shape) without forming the union:
    ``out = (first row, last row, first column, last column)``; False (``out`` untouched)
    when both masks are empty. Rows are scanned from the top and from the bottom until a
    set pixel; columns only over the rows in between."""
    h, w = nucleus.shape
    r0 = -1
    for y in range(h):
        for x in range(w):
            if nucleus[y, x] or cytoplasm[y, x]:
                r0 = y
                break
        if r0 >= 0:
            break
    if r0 < 0:
        return False
    r1 = r0
    for y in range(h - 1, r0, -1):
        hit = False
        for x in range(w):
            if nucleus[y, x] or cytoplasm[y, x]:
                hit = True
                break
        if hit:
            r1 = y
            break
    c0 = w
    c1 = -1
    for y in range(r0, r1 + 1):
        for x in range(c0):
            if nucleus[y, x] or cytoplasm[y, x]:
                c0 = x
                break
        for x in range(w - 1, c1, -1):
            if nucleus[y, x] or cytoplasm[y, x]:
                c1 = x
                break
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
