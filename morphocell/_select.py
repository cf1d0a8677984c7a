"""Order-statistic kernel shared by the segmentation and the colour features.

``kth_smallest`` returns exactly the value a full sort would put at index ``k``; only the
work differs (expected O(n) instead of O(n log n)).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["kth_smallest", "min_from"]


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
