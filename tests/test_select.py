"""The quickselect kernel shared by segmentation and colour features against a full sort."""
from __future__ import annotations

import numpy as np
import pytest

from morphocell.features._kernels.select import kth_smallest, min_from


def _cases():
    rng = np.random.default_rng(0)
    yield rng.random(1001)
    yield rng.integers(0, 4, 500).astype(np.float64)      # many ties
    yield np.arange(300, dtype=np.float64)                  # sorted
    yield np.arange(300, dtype=np.float64)[::-1].copy()     # reversed
    yield np.full(64, 2.5)                                  # all equal
    yield np.array([7.0])
    yield rng.normal(size=257).astype(np.float32)


@pytest.mark.parametrize("case", list(_cases()), ids=lambda a: f"{a.dtype}-{a.size}")
def test_kth_smallest_equals_sorted_value_and_partitions(case):
    ref = np.sort(case)
    for k in sorted(k for k in {0, 1, case.size // 2, case.size - 2, case.size - 1}
                    if 0 <= k < case.size):
        a = case.copy()
        assert kth_smallest(a, a.size, k) == ref[k]
        assert np.array_equal(np.sort(a), ref)              # a permutation of the input
        assert (a[:k] <= ref[k]).all() and (a[k + 1:] >= ref[k]).all()
        if k + 1 < a.size:
            assert min_from(a, k + 1, a.size) == ref[k + 1]


@pytest.mark.parametrize("case", list(_cases()), ids=lambda a: f"{a.dtype}-{a.size}")
def test_select_nth_equals_sorted_value_and_leaves_input(case):
    """The branch-free out-of-place selection: the sorted value at every tested rank, the
    input untouched (ties, sorted, reversed, constant and one-value inputs included)."""
    from morphocell.features._kernels.select import select_nth

    ref = np.sort(case)
    for k in sorted(k for k in {0, 1, 17, case.size // 3, case.size // 2, case.size - 2,
                                case.size - 1} if 0 <= k < case.size):
        a = case.copy()
        b1, b2 = np.empty_like(a), np.empty_like(a)
        assert select_nth(a, a.size, k, b1, b2) == ref[k]
        assert np.array_equal(a, case)


def test_segmentation_median_is_numpys():
    """The float32 median of the segmentation (odd and even counts, ties) is np.median's."""
    from morphocell.segmentation._kernels import median_f32

    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 4, 16, 17, 18, 100, 1001, 4000):
        for ties in (False, True):
            a = rng.random(n).astype(np.float32)
            if ties:
                a = np.round(a * 5).astype(np.float32)
            assert median_f32(a.copy(), n) == np.float32(np.median(a)), (n, ties)
    assert np.isnan(median_f32(np.empty(0, np.float32), 0))
