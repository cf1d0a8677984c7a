"""Colour family: exact agreement with scikit-image + numpy/scipy on real PBC cells, the
circular hue, the NaN policy, invariances and the kernel's numeric helpers."""
from __future__ import annotations

import numpy as np
import pytest
import reference as ref

from morphocell import FeatureError, read_image, segment
from morphocell.features import color, registry
from morphocell.features._kernels import color as kern
from morphocell.features.base import make_crop

CH = color.CHANNELS
I8 = [CH.index(c) for c in ("R", "G", "B", "V", "OdR", "OdG", "OdB", "S")]


@pytest.fixture(scope="module")
def crops(pbc_small):
    out = []
    for path, label in pbc_small:
        img = read_image(path)
        out.append((label, make_crop(img, segment(img))))
    return out


def _regions(crop):
    return (crop.nucleus, crop.cytoplasm, crop.cell)


def test_matches_skimage_numpy_scipy_on_real_cells(crops):
    """Every statistic of every channel and region against the slow reference."""
    checked = 0
    for label, crop in crops:
        stats, res = color.color_stats(crop.image, crop.nucleus, crop.cytoplasm)
        for r, m in enumerate(_regions(crop)):
            want, want_res = ref.color_region_stats(crop.image, m, CH)
            np.testing.assert_allclose(stats[r], want, rtol=1e-9, atol=1e-11,
                                       err_msg=f"{label} region {r}")
            np.testing.assert_allclose(res[r], want_res, rtol=1e-11, equal_nan=True)
            if m.any():
                # channels whose per-pixel values are computed with exactly skimage's
                # operations: the percentiles are bit-identical to numpy.percentile
                np.testing.assert_array_equal(stats[r, I8, 2:5], want[I8, 2:5])
                checked += 1
    assert checked >= 2 * len(crops)


def test_compute_row_names_and_contrasts(crops):
    _, crop = crops[0]
    row = color.compute(crop)
    names = [s.name for s in color.specs()]
    assert list(row) == names
    assert len(set(names)) == len(names)
    for n in names:
        registry.check_name(n)
        assert registry.describe(n).family == "color"
    stats, res = color.color_stats(crop.image, crop.nucleus, crop.cytoplasm)
    assert row["Cytoplasm_Color_P90_LabA"] == stats[1, CH.index("LabA"), 4]
    assert row["Cell_Color_MeanResultantLength_H"] == res[2]
    lab = [ref.color_channels(crop.image[m]) for m in (crop.nucleus, crop.cytoplasm)]
    d = [lab[0][c].mean() - lab[1][c].mean() for c in ("LabL", "LabA", "LabB")]
    for c, v in zip(("LabL", "LabA", "LabB"), d, strict=True):
        assert row[f"Cell_Color_NucleusCytoplasmContrast_{c}"] == pytest.approx(v, rel=1e-10)
    assert row["Cell_Color_NucleusCytoplasmDeltaE"] == pytest.approx(np.sqrt(np.sum(
        np.square(d))), rel=1e-10)
    # MGG stain: nuclei are darker and bluer (more haematoxylin-like density) than cytoplasm
    assert row["Cell_Color_NucleusCytoplasmContrast_LabL"] < 0
    assert row["Nucleus_Color_Mean_Hem"] > row["Cytoplasm_Color_Mean_Hem"]


def test_single_pixels_over_colour_space():
    """One-pixel regions: the mean is the pixel's skimage value, Std 0, all percentiles the
    value, Skewness/Kurtosis NaN; covers greys, black, white and saturated colours."""
    rng = np.random.default_rng(7)
    cols = np.vstack([rng.integers(0, 256, (150, 3)), [[0, 0, 0], [255, 255, 255],
                                                       [128, 128, 128], [255, 0, 0],
                                                       [0, 255, 0], [0, 0, 255], [255, 0, 1],
                                                       [1, 0, 255], [200, 200, 10]]]
                     ).astype(np.uint8)
    want = ref.color_channels(cols)
    nuc = np.zeros((1, 2), bool)
    nuc[0, 0] = True
    cyt = ~nuc
    for i, px in enumerate(cols):
        img = np.stack([px, px[::-1]])[None]  # nucleus: px, cytoplasm: reversed px
        stats, res = color.color_stats(img, nuc, cyt)
        for j, c in enumerate(CH):
            v = want[c][i]
            assert stats[0, j, 0] == pytest.approx(v, rel=1e-12, abs=1e-12), (px, c)
            assert stats[0, j, 1] == 0.0
            np.testing.assert_allclose(stats[0, j, 2:5], v if c != "H" else v % 1.0,
                                       rtol=1e-12, atol=1e-12)
            assert np.isnan(stats[0, j, 5:]).all()
        assert res[0] == pytest.approx(1.0, abs=1e-15)
        assert stats[2, CH.index("R"), 0] == (int(px[0]) + int(px[2])) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_exact_with_ties_at_the_minimum_and_far_outliers(seed):
    """The order-statistic search bins each real-valued channel with a dedicated bin for
    its minimum and the span of a ~128-pixel sample: a large tie at the minimum (white
    pixels: stain densities clipped to 0, saturation 0), a bulk of random stain-like colours
    (nearly all values distinct, so a rank off by one shows) and rare extreme pixels outside
    the sample's span must still give numpy's percentiles."""
    rng = np.random.default_rng(seed)
    h, w = 48, 60
    img = np.stack([rng.integers(100, 231, (h, w)), rng.integers(60, 211, (h, w)),
                    rng.integers(140, 221, (h, w))], axis=-1).astype(np.uint8)
    img[rng.random((h, w)) < 0.4] = 255  # white: a tie at the minimum of H, S and stains
    nuc = np.zeros((h, w), bool)
    nuc[8:40, 5:30] = True
    cyt = np.zeros((h, w), bool)
    cyt[2:46, 2:58] = True
    cyt &= ~nuc
    # rare extremes on both sides of every channel, at nucleus pixels the ~128-pixel sample
    # (every 6th of the 800, in raster order) does not visit, so they lie outside its span
    extremes = [[0, 0, 0], [20, 20, 20], [40, 0, 60], [255, 0, 0], [0, 0, 255],
                [10, 250, 10], [250, 250, 0], [5, 5, 5]]
    for i, px in enumerate(extremes):
        k = 6 * (5 + 11 * i) + 1 + (i + seed) % 5
        img[8 + k // 25, 5 + k % 25] = px
    stats, res = color.color_stats(img, nuc, cyt)
    for r, m in enumerate((nuc, cyt, nuc | cyt)):
        want, want_res = ref.color_region_stats(img, m, CH)
        np.testing.assert_allclose(stats[r], want, rtol=1e-9, atol=1e-11, err_msg=f"region {r}")
        np.testing.assert_allclose(stats[r, :, 2:5], want[:, 2:5], rtol=1e-12, atol=1e-12,
                                   err_msg=f"region {r}")


def test_empty_region_is_nan_and_constant_region_has_nan_shape_stats(crops):
    _, crop = crops[0]
    no_cyt = np.zeros_like(crop.cytoplasm)
    stats, res = color.color_stats(crop.image, crop.nucleus, no_cyt)
    assert np.isnan(stats[1]).all() and np.isnan(res[1])
    full, _ = color.color_stats(crop.image, crop.nucleus, crop.cytoplasm)
    np.testing.assert_allclose(stats[0], full[0], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(stats[2], stats[0], rtol=1e-12, equal_nan=True)
    row = color.compute(type(crop)(crop.image, crop.nucleus, no_cyt, crop.offset))
    assert np.isnan(row["Cell_Color_NucleusCytoplasmDeltaE"])
    assert np.isnan(row["Cytoplasm_Color_Median_LabL"])
    # nothing at all
    stats, res = color.color_stats(crop.image, no_cyt, no_cyt)
    assert np.isnan(stats).all() and np.isnan(res).all()
    # a constant region: scipy gives NaN skewness/kurtosis too
    img = np.full((5, 5, 3), (180, 90, 200), np.uint8)
    m = np.ones((5, 5), bool)
    stats, _ = color.color_stats(img, m, np.zeros_like(m))
    assert (stats[0, :, 1] == 0).all() and np.isnan(stats[0, :, 5:]).all()
    assert np.isnan(ref.color_linear_stats(ref.color_channels(img[m])["LabL"])[5])


def test_channel_cycle_rotates_hue_by_a_third(crops):
    """(R, G, B) -> (G, B, R) turns every HSV hue by -1/3 turn exactly (grey pixels, hue 0 by
    convention, are left out); MGG purples (H ~ 0.8) then cross 0/1 the other way: the
    circular statistics follow the rotation."""
    for _, crop in crops[::4]:
        im = crop.image.astype(int)
        chroma = (im.max(axis=2) != im.min(axis=2))
        nuc, cyt = crop.nucleus & chroma, crop.cytoplasm & chroma
        a, ra = color.color_stats(crop.image, nuc, cyt)
        img = np.ascontiguousarray(crop.image[..., [1, 2, 0]])
        b, rb = color.color_stats(img, nuc, cyt)
        h = CH.index("H")
        for s in (0, 2, 3, 4):  # location: rotated by -1/3 mod 1
            diff = (a[:, h, s] - b[:, h, s] - 1 / 3) % 1.0
            np.testing.assert_allclose(np.minimum(diff, 1 - diff), 0, atol=1e-12)
        np.testing.assert_allclose(b[:, h, [1, 5, 6]], a[:, h, [1, 5, 6]], rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(rb, ra, rtol=1e-12)
        for src, dst in (("G", "R"), ("B", "G"), ("R", "B"), ("OdG", "OdR")):
            np.testing.assert_array_equal(b[:, CH.index(dst)], a[:, CH.index(src)])
        for c in ("V", "S"):
            np.testing.assert_allclose(b[:, CH.index(c)], a[:, CH.index(c)], rtol=1e-12,
                                       equal_nan=True)


def test_invariant_to_rotation_and_flip(crops):
    _, crop = crops[5]
    a, _ = color.color_stats(crop.image, crop.nucleus, crop.cytoplasm)
    for f in (lambda x: np.rot90(x), lambda x: x[::-1], lambda x: np.swapaxes(x, 0, 1)):
        b, _ = color.color_stats(f(crop.image), f(crop.nucleus), f(crop.cytoplasm))
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(b[:, :, 2:5][:, I8], a[:, :, 2:5][:, I8])


def test_extractor_row_contains_colour(crops, pbc_small):
    from morphocell import extract_features

    img = read_image(pbc_small[0][0])
    row = extract_features(img, families=["color"])
    assert list(row) == [s.name for s in color.specs()]
    assert row == pytest.approx(color.compute(make_crop(img, segment(img))), nan_ok=True)


def test_constants_and_luts_are_skimages():
    import skimage.color.colorconv as cc
    from skimage.util import img_as_float64

    np.testing.assert_array_equal(kern.XYZ_FROM_RGB, cc.xyz_from_rgb)
    np.testing.assert_array_equal(kern.HED_FROM_RGB, cc.hed_from_rgb)
    np.testing.assert_array_equal(kern.WHITE_D65,
                                  cc.xyz_tristimulus_values(illuminant="D65", observer="2"))
    lv = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(kern.luts()["f"], img_as_float64(lv))


def test_numeric_helpers_against_numpy():
    rng = np.random.default_rng(3)
    t = np.concatenate([rng.uniform(0.008857, 1.1, 3000), [0.008857, 1.0, 0.5]])
    got = np.array([kern._lab_f(x) for x in t])
    np.testing.assert_allclose(got, np.cbrt(t), rtol=2e-16 * 4, atol=0)
    assert kern._lab_f(0.001) == 7.787 * 0.001 + 16.0 / 116.0
    h = np.concatenate([rng.uniform(0, 1, 3000), [0, 0.125, 0.25, 0.5, 0.75, 0.999999]])
    sc = np.array([kern._sincos_turns(x) for x in h])
    np.testing.assert_allclose(sc[:, 0], np.sin(2 * np.pi * h), atol=2e-15)
    np.testing.assert_allclose(sc[:, 1], np.cos(2 * np.pi * h), atol=2e-15)


def test_bad_input_raises_feature_error():
    img = np.zeros((4, 4, 3), np.uint8)
    m = np.ones((4, 4), bool)
    with pytest.raises(FeatureError, match="uint8"):
        color.color_stats(img.astype(np.float32), m, m)
    with pytest.raises(FeatureError, match="do not match"):
        color.color_stats(img, m[:3], m[:3])
    # overlapping masks: the nucleus wins, as in CellMasks
    s1, _ = color.color_stats(img, m, m)
    assert np.isnan(s1[1]).all() and s1[0, 0, 0] == 0.0
