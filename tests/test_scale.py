"""Pixel-scale estimation on real cells: a known resampling factor is recovered."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import pbc_subset

from morphocell.io import read_image
from morphocell.preprocess import (
    StainNormalizationError,
    batch_scale_factor,
    estimate_rbc_diameter,
    resample,
    size_scale_factor,
)
from morphocell.segmentation import segment


@pytest.fixture(scope="module")
def cells(data_dir):
    """12 real PBC train images of the four common white-cell classes."""
    keep = ("neutrophil", "lymphocyte", "monocyte", "eosinophil")
    return [read_image(p) for p, lab in pbc_subset(3, offset=7) if lab in keep]


def _areas(images):
    out = []
    for im in images:
        m = segment(im)
        out.append(float(m.cell.sum()) if m.found else np.nan)
    return np.asarray(out)


@pytest.mark.parametrize("factor", [0.6, 1.5])
def test_batch_scale_factor_recovers_resampling(cells, factor):
    ref = _areas(cells)
    got = batch_scale_factor(_areas([resample(im, factor) for im in cells]), ref)
    assert got == pytest.approx(factor, rel=0.06)
    # the other way round: the reference is the resampled batch
    back = batch_scale_factor(ref, _areas([resample(im, factor) for im in cells]))
    assert back == pytest.approx(1 / factor, rel=0.06)


def test_rbc_diameter_follows_resampling(cells):
    f = 0.7
    d0 = np.array([estimate_rbc_diameter(im) for im in cells])
    d1 = np.array([estimate_rbc_diameter(resample(im, f)) for im in cells])
    both = np.isfinite(d0) & np.isfinite(d1)
    assert both.sum() >= len(cells) // 2
    assert np.median(d1[both]) / np.median(d0[both]) == pytest.approx(f, rel=0.1)


def test_size_scale_factor_and_resample_contract(cells):
    assert size_scale_factor(400.0, 100.0) == pytest.approx(2.0)
    assert np.isnan(size_scale_factor(0.0, 100.0))
    assert np.isnan(size_scale_factor(np.nan, 100.0))
    assert np.isnan(batch_scale_factor([np.nan, -1.0], [100.0]))
    im = cells[0]
    assert resample(im, 1.0) is not None and resample(im, 1.0).shape == im.shape
    assert resample(im, 0.5).shape[:2] == (round(im.shape[0] * 0.5), round(im.shape[1] * 0.5))
    with pytest.raises(StainNormalizationError, match="positive"):
        resample(im, 0.0)
