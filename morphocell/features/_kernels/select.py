"""Order-statistic kernel shared by the segmentation and the colour features.

``kth_smallest`` (in place) and ``select_nth`` (out of place) return exactly the value a full
sort would put at index ``k``; only the work differs (expected O(n) instead of O(n log n)).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["kth_smallest", "min_from", "select_nth"]


@njit(cache=True, nogil=True)
def kth_smallest(a: np.ndarray, n: int, k: int):  # pragma: no cover - compiled
    """The ``k``-th smallest of ``a[:n]`` (0-based; ``a[:n]`` must hold no NaN), reordering
    ``a[:n]`` in place so that ``a[:k]`` holds values ``<=`` it and ``a[k + 1:n]`` values
    ``>=`` it (Hoare's quickselect with a median-of-three pivot)."""
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) // 2
        # median of three to a[mid]
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while pivot < a[j]:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


@njit(cache=True, nogil=True)
def min_from(a: np.ndarray, i0: int, n: int):  # pragma: no cover - compiled
    """``min(a[i0:n])`` (``n > i0``)."""
    m = a[i0]
    for i in range(i0 + 1, n):
        if a[i] < m:
            m = a[i]
    return m


@njit(cache=True, nogil=True)
def select_nth(a: np.ndarray, n: int, k: int, b1: np.ndarray, b2: np.ndarray):  # pragma: no cover
    """The ``k``-th smallest of ``a[:n]`` (0-based; no NaN), the value a full sort would put
    at index ``k``, leaving ``a`` unchanged (``b1``, ``b2``: scratch of ``a``'s dtype, size
    ``>= n``).

    Quickselect with a median-of-three pivot whose partition is out of place and
    branch-free: each value is written to both ends of the other buffer and only the matching
    end advances (values below the pivot fill it from the front, values above from the
    back, equal values are dropped: if the rank falls between the two parts, the pivot is
    the answer). No mispredicted branch per value, unlike an in-place Hoare partition, which
    is several times slower on unsorted data.
    """
    src = a
    dst = b1
    into_b1 = True  # the buffer the next pass writes
    lo = 0          # src[lo:lo + m] is the live part
    m = n
    while m > 16:
        x0 = src[lo]
        x1 = src[lo + m // 2]
        x2 = src[lo + m - 1]
        p = max(min(x0, x1), min(max(x0, x1), x2))  # median of three
        nl = 0
        nh = 0
        for i in range(lo, lo + m):
            x = src[i]
            dst[nl] = x
            dst[m - 1 - nh] = x
            nl += x < p
            nh += x > p
        if k < nl:
            m = nl
            lo = 0
        elif k >= m - nh:
            k -= m - nh
            lo = m - nh
            m = nh
        else:
            return p
        src = dst
        into_b1 = not into_b1
        dst = b1 if into_b1 else b2
    # a few values left: insertion sort of a copy
    for i in range(m):
        dst[i] = src[lo + i]
    for i in range(1, m):
        x = dst[i]
        j = i - 1
        while j >= 0 and dst[j] > x:
            dst[j + 1] = dst[j]
            j -= 1
        dst[j + 1] = x
    return dst[k]
