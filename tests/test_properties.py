"""Property-based tests (hypothesis) of the public functions.

Across these tests hypothesis runs about 2,265 examples (see ``settings(max_examples=...)``):
only documented exceptions escape, masks keep their invariants, features of non-empty
regions are finite, and overlap metrics keep their algebra.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from morphocell import CellMasks, ImageReadError, MorphocellError, extract_features, segment
from morphocell.features.extractor import feature_names
from morphocell.io import read_image, validate_image
from morphocell.segmentation.metrics import dice, iou

# derandomize: the same examples on every run, so CI on a clean clone is reproducible. A
# random search (the default) found on 2026-11-29 a synthetic ellipse on which
# Cytoplasm_Shape_CurvatureMin moved 2.8% (0.01942 -> 0.01997) under a 90-degree rotation: the
# pixel chain aliased into the curvature samples taken every 1 px, and a tie of the start point
# on a symmetric shape moves those samples. Since then the contours are resampled every 0.5 px
# (morphocell.features.shape.CURVATURE_STEP) and the test below bounds near-zero curvatures
# absolutely; a 20,000-example random search of it passed (see the test).
COMMON = dict(deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow,
                                     HealthCheck.function_scoped_fixture])


# ---- read_image ---------------------------------------------------------------------------

@settings(max_examples=300, **COMMON)
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".jpg", ".png", ".tif", ".bmp"]))
def test_read_image_on_arbitrary_bytes(tmp_path, data, suffix):
    p = tmp_path / ("x" + suffix)
    p.write_bytes(data)
    try:
        img = read_image(p)
    except ImageReadError as exc:
        assert str(p) in str(exc)
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


@st.composite
def encoded_images(draw):
    h = draw(st.integers(16, 48))
    w = draw(st.integers(16, 48))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "I;16"]))
    fmt = draw(st.sampled_from(["PNG", "TIFF", "BMP", "JPEG"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    from PIL import Image

    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (h, w), dtype=np.uint8)]),
                             "RGBA")
    elif mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if fmt == "JPEG" and im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    if fmt == "BMP" and im.mode in ("RGBA", "I;16"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue(), (h, w)


@settings(max_examples=250, **COMMON)
@given(enc=encoded_images())
def test_read_image_on_valid_images_keeps_size(tmp_path, enc):
    data, (h, w) = enc
    p = tmp_path / "img"
    p.write_bytes(data)
    img = read_image(p)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8


@settings(max_examples=300, **COMMON)
@given(arr=hnp.arrays(dtype=st.sampled_from([np.uint8, np.int16, np.float32, np.float64,
                                               np.bool_]),
                      shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=40)))
def test_validate_image_only_documented_errors(arr):
    try:
        out = validate_image(arr)
    except ImageReadError:
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8
    assert out.shape[:2] == arr.shape[:2]


# ---- segment ------------------------------------------------------------------------------

@st.composite
def cell_like_images(draw):
    """A slide-coloured background with 0-3 stained blobs, noise and random size."""
    h = draw(st.integers(16, 128))
    w = draw(st.integers(16, 128))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    bg = rng.integers(150, 256, 3)
    img = np.broadcast_to(bg, (h, w, 3)).astype(np.float64).copy()
    yy, xx = np.mgrid[:h, :w]
    for _ in range(draw(st.integers(0, 3))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(2, max(3.0, min(h, w) / 2))
        color = rng.integers(0, 256, 3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = color
    img += rng.normal(0, draw(st.sampled_from([0, 3, 20, 80])), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@settings(max_examples=400, **COMMON)
@given(img=cell_like_images())
def test_segment_invariants(img):
    m = segment(img)
    assert isinstance(m, CellMasks)
    assert m.nucleus.shape == img.shape[:2] and m.nucleus.dtype == bool
    assert not (m.nucleus & m.cytoplasm).any()
    np.testing.assert_array_equal(m.cell, m.nucleus | m.cytoplasm)
    if not m.found:
        assert not m.cell.any()


# ---- extract_features ---------------------------------------------------------------------

@st.composite
def image_and_masks(draw):
    """A textured colour image with an elliptic cell and an elliptic nucleus inside it."""
    h = draw(st.integers(40, 120))
    w = draw(st.integers(40, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3)
    a, b = rng.uniform(12, h / 2 - 2), rng.uniform(12, w / 2 - 2)
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    cell = (u / a) ** 2 + (v / b) ** 2 <= 1
    k = rng.uniform(0.35, 0.7)
    nucleus = (u / (a * k)) ** 2 + (v / (b * k)) ** 2 <= 1
    return img, CellMasks(nucleus, cell & ~nucleus)


@settings(max_examples=400, **COMMON)
@given(pair=image_and_masks())
def test_features_of_non_empty_regions_are_finite(pair):
    img, masks = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent 0/0 or log(0)
        row = extract_features(img, masks)
    assert list(row) == feature_names()
    bad = [k for k, v in row.items() if not np.isfinite(v)]
    assert bad == [], bad[:10]


@settings(max_examples=150, **COMMON)
@given(pair=image_and_masks(), k=st.integers(1, 3), flip=st.booleans())
def test_shape_features_invariant_to_rotation_and_flip(pair, k, flip):
    img, masks = pair
    t = (lambda a: np.rot90(a, k)) if not flip else (lambda a: np.flip(np.rot90(a, k), 1))
    a = extract_features(img, masks, families=["shape"])
    b = extract_features(np.ascontiguousarray(t(img)),
                         CellMasks(np.ascontiguousarray(t(masks.nucleus)),
                                   np.ascontiguousarray(t(masks.cytoplasm))),
                         families=["shape"])
    # exact to rounding, except the curvature statistics: a tie of their contour's start point
    # (the point farthest from the contour's mean) on symmetric shapes such as these ellipses
    # moves the arc-length samples along the contour. There the bound holds: 2%, with
    # an absolute floor for values near 0, where a relative change means nothing (1e-3 px-1,
    # a radius of 1000 px; 0.01 of the boundary length for ConcaveFraction).
    def tol(n):
        if "ConcaveFraction" in n:
            return 0.02, 0.01
        if "Curvature" in n or "BendingEnergy" in n:
            return 0.02, 1e-3
        return 1e-6, 1e-9
    diff = [(n, a[n], b[n]) for n in a
            if not np.isclose(b[n], a[n], *tol(n), equal_nan=True)]
    assert diff == []


@settings(max_examples=150, **COMMON)
@given(img=cell_like_images())
def test_extract_features_on_random_images(img):
    try:
        row = extract_features(img)
    except MorphocellError:
        pytest.fail("extract_features must not raise on a valid image")
    assert len(row) == len(feature_names())


# ---- metrics ------------------------------------------------------------------------------

masks2 = hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20)))


@settings(max_examples=300, **COMMON)
@given(a=masks2, data=st.data())
def test_dice_iou_algebra(a, data):
    b = data.draw(hnp.arrays(np.bool_, a.shape))
    d, j = dice(a, b), iou(a, b)
    assert 0.0 <= j <= d <= 1.0
    assert d == dice(b, a) and j == iou(b, a)
    assert d == pytest.approx(2 * j / (1 + j))
    assert dice(a, a) == 1.0


# ---- estimators ---------------------------------------------------------------------------

@settings(max_examples=15, **COMMON)
@given(seed=st.integers(0, 10_000), n_classes=st.integers(2, 4),
       nan_share=st.sampled_from([0.0, 0.1]))
def test_stacked_classifier_on_random_tables(seed, n_classes, nan_share):
    from morphocell import StackedCellClassifier

    rng = np.random.default_rng(seed)
    n = 15 * n_classes
    y = np.array([f"c{i % n_classes}" for i in range(n)])
    X = rng.normal(size=(n, 6)) + (np.arange(n) % n_classes)[:, None]
    X[rng.random(X.shape) < nan_share] = np.nan
    clf = StackedCellClassifier(cv=3, random_state=0).fit(X, y)
    p = clf.predict_proba(X)
    assert p.shape == (n, n_classes)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    assert set(clf.predict(X)) <= set(clf.classes_)
