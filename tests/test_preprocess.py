"""Stain and scale normalisation (morphocell.preprocess) against slow references and on
real images of both labs."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA, pbc_subset

from morphocell import preprocess as pp
from morphocell.errors import MorphocellError
from morphocell.io import read_image


# -- slow references -------------------------------------------------------------------------
def _lab_ref(img: np.ndarray) -> np.ndarray:
    """sRGB -> XYZ (D65) -> CIE L*a*b*, pixel formulas written out (no OpenCV)."""
    c = img.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    xyz = lin @ m.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = np.where(xyz[..., 1] > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * xyz[..., 1])
    return np.stack([L, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def _real_images():
    paths = [p for p, _ in pbc_subset(1)][:4]
    d1 = sorted((DATA / "segwbc" / "dataset1").glob("*_image.png"))[:3]
    return [read_image(p) for p in paths + d1]


@pytest.fixture(scope="module")
def real(data_dir):
    return _real_images()


TARGET_MEAN = np.array([75.0, 13.0, 3.0])
TARGET_STD = np.array([19.0, 12.0, 19.0])


def test_lab_stats_match_reference(real):
    for img in real:
        m, s = pp.lab_stats(img)
        ref = _lab_ref(img).reshape(-1, 3)
        np.testing.assert_allclose(m, ref.mean(0), atol=0.3)
        np.testing.assert_allclose(s, ref.std(0), atol=0.3)


def test_reinhard_hits_target_and_is_idempotent(real):
    for img in real:
        out = pp.reinhard_normalize(img, TARGET_MEAN, TARGET_STD)
        assert out.shape == img.shape and out.dtype == np.uint8
        m, s = pp.lab_stats(out)
        # uint8 rounding and clipping of out-of-gamut colours leave a small error
        np.testing.assert_allclose(m, TARGET_MEAN, atol=1.5)
        np.testing.assert_allclose(s, TARGET_STD, rtol=0.12)
        again = pp.reinhard_normalize(out, TARGET_MEAN, TARGET_STD)
        assert np.abs(again.astype(int) - out.astype(int)).mean() < 1.5  # uint8 round trip


def test_reinhard_matches_slow_reference(real):
    img = real[0]
    ref_lab = _lab_ref(img)
    ms, ss = ref_lab.reshape(-1, 3).mean(0), ref_lab.reshape(-1, 3).std(0)
    want = (ref_lab - ms) / ss * TARGET_STD + TARGET_MEAN
    got = _lab_ref(pp.reinhard_normalize(img, TARGET_MEAN, TARGET_STD))
    inside = (want[..., 0] > 5) & (want[..., 0] < 95)  # away from clipped colours
    assert np.median(np.abs(got - want)[inside]) < 0.7


def test_reinhard_target_from_images(real):
    m, s = pp.fit_reinhard_target(real[:3])
    assert m.shape == (3,) and s.shape == (3,) and np.all(s > 0)


def test_bad_inputs():
    with pytest.raises(MorphocellError):
        pp.reinhard_normalize(np.zeros((8, 8), np.uint8), TARGET_MEAN, TARGET_STD)
    with pytest.raises(pp.StainNormalizationError):
        pp.reinhard_normalize(np.zeros((8, 8, 3), np.float32), TARGET_MEAN, TARGET_STD)
    with pytest.raises(pp.StainNormalizationError):
        pp.reinhard_normalize(np.zeros((8, 8, 3), np.uint8), TARGET_MEAN, [1.0, 0.0, 1.0])
    with pytest.raises(pp.StainNormalizationError):
        pp.macenko_stains(np.full((16, 16, 3), 250, np.uint8))  # nothing stained
    with pytest.raises(pp.StainNormalizationError):
        pp.normalize_scale(np.zeros((8, 8, 3), np.uint8), 10.0, float("nan"))


def test_macenko_recovers_known_stains():
    rng = np.random.default_rng(0)
    h = np.array([0.65, 0.70, 0.29])
    e = np.array([0.07, 0.99, 0.11])
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    conc = rng.uniform(0, 1.2, (64 * 64, 2)) * (rng.random((64 * 64, 1)) < 0.7)
    bg = np.array([240.0, 230.0, 200.0])  # a yellowish background
    od = conc @ np.stack([h, e])
    img = np.clip(np.rint((bg + 1) * np.exp(-od) - 1), 0, 255).astype(np.uint8).reshape(64, 64, 3)
    stains, c = pp.macenko_stains(img, beta=0.05)
    assert stains.shape == (3, 2) and c.shape == (64 * 64, 2)
    np.testing.assert_allclose(np.linalg.norm(stains, axis=0), 1.0, atol=1e-9)
    assert stains[:, 0] @ h > 0.98 and stains[:, 1] @ e > 0.98
    tgt = pp.MacenkoTarget(np.stack([h, e], 1), np.array([1.0, 1.0]), np.array([250.0] * 3))
    out = pp.macenko_normalize(img, tgt, beta=0.05)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.all(np.median(out.reshape(-1, 3)[conc.sum(1) == 0], 0) >= 245)  # new background


def test_macenko_on_real_images(real):
    tgt = pp.fit_macenko_target(real[:4])
    for img in real:
        out = pp.macenko_normalize(img, tgt)
        assert out.shape == img.shape and out.dtype == np.uint8


def _discs(side: int, diameter: float, seed: int = 0) -> np.ndarray:
    """A pale background with non-overlapping pink discs (red cells) of one diameter."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((side, side, 3), (245, 235, 225), np.uint8)
    r = diameter / 2
    centres = []
    for _ in range(400):
        c = rng.uniform(r, side - r, 2)
        if all(np.hypot(*(c - d)) > 2.2 * r for d in centres):
            centres.append(c)
            cv2.circle(img, (int(c[0]), int(c[1])), round(r), (200, 140, 150), -1,
                       lineType=cv2.LINE_AA)
    return img


def test_rbc_diameter_on_synthetic_discs():
    for side, d in ((256, 64), (120, 32), (300, 50)):
        est = pp.estimate_rbc_diameter(_discs(side, d))
        assert abs(est - d) / d < 0.15, (side, d, est)


def test_rbc_diameter_follows_image_scale(data_dir):
    import cv2

    img = read_image(pbc_subset(1, offset=2)[0][0])
    d1 = pp.estimate_rbc_diameter(img)
    d2 = pp.estimate_rbc_diameter(cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA))
    assert np.isfinite(d1) and abs(d2 / d1 - 0.5) < 0.1


def test_normalize_scale():
    img = np.zeros((100, 80, 3), np.uint8)
    out, f = pp.normalize_scale(img, 30.0, 60.0)
    assert f == 2.0 and out.shape == (200, 160, 3) and out.dtype == np.uint8
    out, f = pp.normalize_scale(img, 30.0, 1000.0)
    assert f == 2.0  # clipped to the limits
    out, f = pp.normalize_scale(img, float("nan"), 60.0)
    assert f == 1.0 and out is img
    assert pp.fit_rbc_target([np.nan, 10.0, 30.0, 20.0]) == 20.0


def test_stain_augment_is_seeded(real):
    img = real[0]
    a, pa = pp.stain_augment(img, np.random.default_rng(3))
    b, pb = pp.stain_augment(img, np.random.default_rng(3))
    c, _ = pp.stain_augment(img, np.random.default_rng(4))
    assert pa == pb and np.array_equal(a, b) and a.dtype == np.uint8
    assert a.shape[:2] == tuple(round(s * pa["scale"]) for s in img.shape[:2])
    assert not np.array_equal(a, c) or a.shape != c.shape


def test_stain_augmentation_ranges_are_defined_once(real):
    """The CNN's "stain" preset takes its colour ranges from the one StainAugmentConfig; its
    colour-only form draws no blur and no rescaling."""
    from morphocell.deep.augment import STAIN, AugmentConfig

    ranges = pp.STAIN_AUGMENT
    assert (STAIN.hue, STAIN.saturation, STAIN.gamma, STAIN.tint) == (
        ranges.hue, ranges.saturation, ranges.gamma, ranges.tint)
    other = pp.StainAugmentConfig(hue=0.2, saturation=(0.5, 1.5), tint=(0.7, 1.3),
                                  gamma=(0.5, 2.0))
    derived = AugmentConfig.stain(other)
    assert (derived.hue, derived.saturation, derived.gamma, derived.tint) == (
        0.2, (0.5, 1.5), (0.5, 2.0), (0.7, 1.3))
    colour = ranges.colour_only()
    assert colour.blur == (0.0, 0.0) and colour.scale == (1.0, 1.0)
    assert (colour.hue, colour.saturation) == (ranges.hue, ranges.saturation)
    img = real[0]
    out, p = pp.stain_augment(img, np.random.default_rng(3), colour)
    assert out.shape == img.shape and p["scale"] == 1.0 and p["blur"] == 0.0
    assert np.abs(out.astype(int) - img.astype(int)).mean() > 1  # the colours did change


def test_stain_copies_are_reproducible_cached_and_named_by_content(data_dir, tmp_path):
    import os
    import shutil

    src = [p for p, _ in pbc_subset(1)][:3]
    twin = tmp_path / "same_content_other_name.jpg"
    shutil.copyfile(src[0], twin)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = pp.write_stain_copies([*src, str(twin), str(bad), str(tmp_path / "missing.jpg")],
                                tmp_path / "copies", seed=3)
    assert out[4] is None and out[5] is None
    assert out[3] == out[0]  # a copy depends on the image's content, not its name
    assert len(set(out[:3])) == 3
    for p, c in zip(src, out[:3]):
        a, b = read_image(p), read_image(c)
        assert b.ndim == 3 and b.shape[2] == 3
        if a.shape == b.shape:  # (a drawn scale of ~1 keeps the size)
            assert np.abs(a.astype(int) - b.astype(int)).mean() > 1
    stamps = [os.stat(c).st_mtime_ns for c in out[:3]]
    again = pp.write_stain_copies(src, tmp_path / "copies", seed=3)
    assert again == out[:3] and [os.stat(c).st_mtime_ns for c in again] == stamps
    fresh = pp.write_stain_copies(src, tmp_path / "fresh", seed=3)
    for c, f in zip(out[:3], fresh):
        assert open(c, "rb").read() == open(f, "rb").read()  # same seed: same bytes
    other = pp.write_stain_copies(src, tmp_path / "copies", seed=4)
    assert not set(other) & set(out)
    assert sorted(os.listdir(tmp_path / "copies")) == sorted(
        os.path.basename(c) for c in [*out[:3], *other])  # nothing half-written left
