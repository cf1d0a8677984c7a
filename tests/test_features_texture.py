"""Texture family on real PBC cells: GLCM/Haralick vs mahotas and scikit-image, uniform LBP
vs scikit-image (bit-exact), granularity vs scipy.ndimage.grey_opening, the NaN policy and
the invariances under flips and 90-degree rotations."""
from __future__ import annotations

import numpy as np
import pytest
import reference as ref

from morphocell import FeatureError, extract_features, read_image, segment
from morphocell.features import registry, texture
from morphocell.features.base import Crop, make_crop

REGIONS = ("Nucleus", "Cytoplasm", "Cell")
NAMES = [s.name for s in texture.specs()]


@pytest.fixture(scope="module")
def crops(pbc_small):
    out = []
    for path, label in pbc_small:
        img = read_image(path)
        masks = segment(img)
        assert masks.found, path
        out.append((label, make_crop(img, masks)))
    return out


def _masks(crop):
    return (crop.nucleus, crop.cytoplasm, crop.cell)


def _crop(gray_or_rgb, nucleus, cytoplasm):
    img = np.asarray(gray_or_rgb, np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return Crop(np.ascontiguousarray(img), np.ascontiguousarray(nucleus, bool),
                np.ascontiguousarray(cytoplasm, bool), (0, 0))


# ---- names, registry -----------------------------------------------------------------------

def test_names_registry_and_row(crops):
    n_per_region = (13 * len(texture.DISTANCES) + sum(p + 2 for p, _ in texture.LBP_PARAMS)
                    + texture.GRANULARITY_STEPS)
    assert len(NAMES) == 3 * n_per_region == len(set(NAMES))
    for n in NAMES:
        registry.check_name(n)
        spec = registry.describe(n)
        assert spec.family == "texture" and spec.formula and spec.unit == "1"
    assert "Nucleus_Texture_GlcmContrast_Gray_2" in NAMES
    assert "Cell_Texture_Lbp_Gray_16_2_Bin17" in NAMES
    row = texture.compute(crops[0][1])
    assert list(row) == NAMES
    np.testing.assert_array_equal(np.array(list(row.values())),
                                  texture.compute_array(crops[0][1]))


def test_public_steps_give_the_columns_bit_for_bit(crops):
    """The functions a user calls (quantize, region_labels, glcm_counts, haralick,
    lbp_histograms, granularity) give exactly the values of compute_array, column by
    column: the pipeline and the public API are one path."""
    for _, crop in crops[::4]:
        row = texture.compute(crop)
        gray, lab = crop.gray, texture.region_labels(crop)
        lab2, q, n_nuc, n_cyt = texture.labels_and_levels(crop.nucleus, crop.cytoplasm, gray)
        np.testing.assert_array_equal(lab2, lab)
        np.testing.assert_array_equal(q, texture.quantize(gray))
        np.testing.assert_array_equal(q, gray // 8)
        assert (n_nuc, n_cyt) == (int((lab == 1).sum()), int((lab == 2).sum()))
        har = texture.haralick(texture.glcm_counts(q, lab), len(texture.DISTANCES))
        gran = texture.granularity(gray, lab)
        sig = texture.granularity_signal(gray, lab > 0).astype(np.int64)
        np.testing.assert_array_equal(texture.granularity_sums(gray, lab)[0],
                                      [sig[lab == 1].sum(), sig[lab == 2].sum()])
        got, want = [], []
        for r, reg in enumerate(REGIONS):
            npx = (n_nuc, n_cyt, n_nuc + n_cyt)[r]
            for di, d in enumerate(texture.DISTANCES):
                for fi, (tok, _, _) in enumerate(texture.HARALICK_FEATURES):
                    got.append(har[r, di, fi])
                    want.append(row[f"{reg}_Texture_Glcm{tok}_Gray_{d}"])
            for p, rad in texture.LBP_PARAMS:
                h = texture.lbp_histograms(gray, lab, p, rad)
                counts = h[r] if r < 2 else h[0] + h[1]
                got += list(counts / npx)
                want += [row[f"{reg}_Texture_Lbp_Gray_{p}_{rad}_Bin{b}"] for b in range(p + 2)]
            got += list(gran[r])
            want += [row[f"{reg}_Texture_Granularity_Gray_{i}"]
                     for i in range(1, texture.GRANULARITY_STEPS + 1)]
        assert len(got) == len(NAMES)
        np.testing.assert_array_equal(np.array(got), np.array(want))


def test_public_steps_check_their_inputs():
    g = np.zeros((4, 5), np.uint8)
    with pytest.raises(FeatureError, match="masks of its shape"):
        texture.labels_and_levels(np.zeros((4, 4), bool), np.zeros((4, 5), bool), g)
    with pytest.raises(FeatureError, match="levels"):
        texture.labels_and_levels(np.zeros((4, 5), bool), np.zeros((4, 5), bool), g, levels=48)
    with pytest.raises(FeatureError, match="LBP needs"):
        texture.lbp_counts(g, np.zeros((4, 5), np.uint8), ((1, 1.0),))
    with pytest.raises(FeatureError, match="region labels"):
        texture.lbp_histograms(g, np.full((4, 5), 3, np.uint8), 8, 1)
    with pytest.raises(FeatureError, match="mask of its shape"):
        texture.granularity_signal(g, np.zeros((5, 4), bool))


def test_granularity_of_an_empty_region_is_nan(crops):
    """As its columns: NaN for a region without pixels, numbers for the others."""
    _, crop = crops[0]
    lab = texture.region_labels(Crop(crop.image, crop.nucleus, np.zeros_like(crop.cytoplasm),
                                     crop.offset))
    g = texture.granularity(crop.gray, lab)
    assert np.isnan(g[1]).all() and np.isfinite(g[0]).all() and np.isfinite(g[2]).all()
    np.testing.assert_array_equal(g[0], g[2])  # the cell is the nucleus


# ---- GLCM / Haralick -----------------------------------------------------------------------

def test_haralick_matches_mahotas_on_masked_regions(crops):
    """All 13 features x 3 distances x 3 regions against mahotas on the shifted, masked
    image (ignore_zeros); worst relative error is ~1e-12 (summation order)."""
    worst = np.zeros(13)
    for label, crop in crops:
        q = texture.quantize(crop.gray)
        har = texture.haralick(texture.glcm_counts(q, texture.region_labels(crop)),
                               len(texture.DISTANCES))
        for r, m in enumerate(_masks(crop)):
            for di, d in enumerate(texture.DISTANCES):
                want = ref.texture_haralick_mahotas(q, m, d)
                assert np.isfinite(want).all(), (label, r, d)
                np.testing.assert_allclose(har[r, di], want, rtol=1e-9, atol=1e-12,
                                           err_msg=f"{label} region {r} distance {d}")
                worst = np.maximum(worst, np.abs(har[r, di] - want) / np.abs(want).clip(1e-12))
    assert worst.max() < 1e-9


def test_region_glcm_matches_slow_counts(crops):
    for label, crop in crops:
        q = texture.quantize(crop.gray)
        counts = texture.glcm_counts(q, texture.region_labels(crop))
        off_r, off_c = texture.glcm_offsets()
        for o in range(off_r.size):
            for reg, m in zip(REGIONS, _masks(crop), strict=True):
                want = ref.texture_glcm_slow(q, m, off_r[o], off_c[o], texture.LEVELS)
                np.testing.assert_array_equal(texture.region_glcm(counts, o, reg), want,
                                              err_msg=f"{label} {reg} offset {o}")


def test_glcm_and_props_match_skimage_on_full_rectangles(crops):
    """scikit-image's graycomatrix/graycoprops on the whole (unmasked) crop, for the
    (distance, angle) pairs where its offset rounding gives ours: 0 and 90 degrees at every
    distance, 45 degrees at distance 1."""
    from skimage.feature import graycomatrix, graycoprops

    props = {"contrast": 1, "ASM": 0, "correlation": 2, "homogeneity": 4}
    angles = {0: 0.0, 1: np.pi / 4, 2: np.pi / 2}
    for label, crop in crops[::3]:
        q = texture.quantize(crop.gray)
        full = np.ones(q.shape, bool)
        counts = texture.glcm_counts(q, np.ones(q.shape, np.uint8))  # all "nucleus"
        for di, d in enumerate(texture.DISTANCES):
            for a, theta in angles.items():
                if a == 1 and d != 1:
                    continue
                directed = graycomatrix(q, [d], [theta], levels=texture.LEVELS)[:, :, 0, 0]
                sym = graycomatrix(q, [d], [theta], levels=texture.LEVELS, symmetric=True)
                np.testing.assert_array_equal(
                    texture.region_glcm(counts, di * 4 + a, "Nucleus"), sym[:, :, 0, 0])
                ours = texture.glcm_features(directed)
                symn = graycomatrix(q, [d], [theta], levels=texture.LEVELS, symmetric=True,
                                    normed=True)
                for prop, k in props.items():
                    np.testing.assert_allclose(ours[k], graycoprops(symn, prop)[0, 0],
                                               rtol=1e-9, err_msg=f"{label} {prop} d={d}")
        # and the 4-angle mean at distance 1 equals the masked computation on a full mask
        want = ref.texture_haralick_mahotas(q, full, 1)
        np.testing.assert_allclose(texture.haralick(counts, 3)[0, 0], want, rtol=1e-9)


def test_glcm_constant_region_and_single_angle_pairs():
    """A constant region: correlation 1 (as mahotas/skimage), no NaN or inf. A region whose
    pairs exist at one angle only: the mean is over that angle."""
    g = np.full((12, 14), 100, np.uint8)
    nuc = np.zeros(g.shape, bool)
    nuc[3:9, 3:10] = True
    row = texture.compute(_crop(g, nuc, np.zeros_like(nuc)))
    for d in texture.DISTANCES:
        assert row[f"Nucleus_Texture_GlcmCorrelation_Gray_{d}"] == 1.0
        assert row[f"Nucleus_Texture_GlcmAngularSecondMoment_Gray_{d}"] == 1.0
        assert row[f"Nucleus_Texture_GlcmEntropy_Gray_{d}"] == 0.0
    vals = np.array([v for k, v in row.items() if k.startswith("Nucleus")])
    assert np.isfinite(vals).all()
    # a 1 x 3 horizontal segment: only the 0-degree GLCM has pairs at distances 1, 2
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (9, 9)).astype(np.uint8)
    nuc = np.zeros(g.shape, bool)
    nuc[4, 3:6] = True
    crop = _crop(g, nuc, np.zeros_like(nuc))
    row = texture.compute(crop)
    q = texture.quantize(crop.gray)
    for d in (1, 2):
        got = [row[f"Nucleus_Texture_Glcm{t}_Gray_{d}"] for t, _, _ in texture.HARALICK_FEATURES]
        np.testing.assert_allclose(got, ref.texture_haralick_mahotas(q, nuc, d), rtol=1e-9)
    assert np.isnan(row["Nucleus_Texture_GlcmContrast_Gray_4"])   # no pair at distance 4


# ---- LBP -----------------------------------------------------------------------------------

def test_lbp_counts_equal_skimage_exactly(crops):
    for label, crop in crops:
        lab = texture.region_labels(crop)
        for p, rad in texture.LBP_PARAMS:
            h = texture.lbp_histograms(crop.gray, lab, p, rad)
            got = (h[0], h[1], h[0] + h[1])
            for reg, m, g in zip(REGIONS, _masks(crop), got, strict=True):
                np.testing.assert_array_equal(g, ref.texture_lbp_counts(crop.gray, m, p, rad),
                                              err_msg=f"{label} {reg} P={p} R={rad}")


def test_cell_filling_the_crop_edges(pbc_small):
    """A cell mask touching every edge (as when a cell is cut by the image border): LBP
    samples outside read 0 like scikit-image's; granularity has no glass pixel (b = 255)."""
    img = read_image(pbc_small[5][0])[60:140, 70:150]
    nuc = np.zeros(img.shape[:2], bool)
    nuc[20:60, 20:60] = True
    crop = _crop(img, nuc, ~nuc)
    lab = texture.region_labels(crop)
    for p, rad in texture.LBP_PARAMS:
        h = texture.lbp_histograms(crop.gray, lab, p, rad)
        np.testing.assert_array_equal(h[1], ref.texture_lbp_counts(crop.gray, ~nuc, p, rad))
    np.testing.assert_allclose(
        texture.granularity(crop.gray, lab),
        ref.texture_granularity_slow(crop.gray, nuc, ~nuc, texture.GRANULARITY_STEPS),
        rtol=1e-10, atol=1e-10)
    assert np.isfinite(texture.compute_array(crop)).all()


def test_lbp_histograms_normalised(crops):
    for _, crop in crops[:6]:
        row = texture.compute(crop)
        for reg in REGIONS:
            for p, rad in texture.LBP_PARAMS:
                v = [row[f"{reg}_Texture_Lbp_Gray_{p}_{rad}_Bin{b}"] for b in range(p + 2)]
                assert abs(sum(v) - 1.0) < 1e-12 and min(v) >= 0


def test_lbp_column_offsets_are_exact():
    """The kernel tabulates only dc and uses floor(c + cp) = c + floor(cp): true for every
    column of any image up to 2**16 wide."""
    c = np.arange(1 << 16, dtype=np.float64)
    for p, rad in texture.LBP_PARAMS:
        _, cp = texture.lbp_offsets(p, rad)
        for x in cp:
            assert np.array_equal(np.floor(c + x), c + np.floor(x))
            assert np.array_equal(np.ceil(c + x), c + np.ceil(x))


# ---- granularity ---------------------------------------------------------------------------

def test_granularity_matches_scipy_grey_opening(crops):
    for label, crop in crops[::3]:
        got = texture.granularity(crop.gray, texture.region_labels(crop))
        want = ref.texture_granularity_slow(crop.gray, crop.nucleus, crop.cytoplasm,
                                            texture.GRANULARITY_STEPS)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=label)
        assert (got >= 0).all() and (got.sum(axis=1) <= 100 + 1e-9).all()


def test_granularity_signal_and_edge_cases():
    gray = np.array([[200, 200, 200, 201],
                     [200, 120, 90, 200],
                     [199, 130, 250, 200]], np.uint8)
    cell = np.zeros(gray.shape, bool)
    cell[1:, 1:3] = True
    sig = texture.granularity_signal(gray, cell)
    # glass = 200 (lower median of the 8 outside pixels); 250 > glass -> 0
    np.testing.assert_array_equal(sig[1:, 1:3], [[80, 110], [70, 0]])
    assert not sig[~cell].any()
    # a cell brighter than the glass has no signal: spectrum 0, not NaN
    g = np.full((10, 10), 100, np.uint8)
    g[3:7, 3:7] = 180
    m = np.zeros(g.shape, bool)
    m[3:7, 3:7] = True
    row = texture.compute(_crop(g, m, np.zeros_like(m)))
    assert row["Nucleus_Texture_Granularity_Gray_1"] == 0.0


def test_granularity_differs_between_classes(pbc_20):
    """Granules: eosinophils/basophils/neutrophils lose much more signal to the small
    openings (radius 2-4) than lymphocytes, on 20 real cells per class."""
    by_class: dict[str, list[float]] = {}
    for path, label in pbc_20:
        if label not in ("eosinophil", "basophil", "neutrophil", "lymphocyte"):
            continue
        img = read_image(path)
        crop = make_crop(img, segment(img))
        g = texture.granularity(crop.gray, texture.region_labels(crop))
        by_class.setdefault(label, []).append(g[2, 1:4].sum())   # cell, radii 2..4
    lym = np.median(by_class["lymphocyte"])
    for cls in ("eosinophil", "basophil", "neutrophil"):
        assert np.median(by_class[cls]) > lym, (cls, np.median(by_class[cls]), lym)


# ---- NaN policy, invariances, end to end ---------------------------------------------------

def test_nan_policy(crops):
    _, crop = crops[0]
    for empty in ("nucleus", "cytoplasm"):
        nuc = crop.nucleus if empty != "nucleus" else np.zeros_like(crop.nucleus)
        cyt = crop.cytoplasm if empty != "cytoplasm" else np.zeros_like(crop.cytoplasm)
        row = texture.compute(Crop(crop.image, nuc, cyt, crop.offset))
        gone = empty.capitalize()
        for k, v in row.items():
            assert np.isnan(v) == k.startswith(gone), k
    # one-pixel nucleus: no pair -> GLCM NaN; LBP and granularity defined
    nuc = np.zeros_like(crop.nucleus)
    r, c = np.argwhere(crop.nucleus)[0]
    nuc[r, c] = True
    row = texture.compute(Crop(crop.image, nuc, crop.cytoplasm & ~nuc, crop.offset))
    assert all(np.isnan(v) for k, v in row.items() if k.startswith("Nucleus_Texture_Glcm"))
    assert row["Nucleus_Texture_Lbp_Gray_8_1_Bin9"] in (0.0, 1.0)
    assert np.isfinite(row["Nucleus_Texture_Granularity_Gray_1"])
    # real cells: everything finite
    for _, crop in crops:
        assert np.isfinite(texture.compute_array(crop)).all()


def test_bad_levels_raise_feature_error():
    with pytest.raises(FeatureError, match="levels"):
        texture.quantize(np.zeros((3, 3), np.uint8), levels=30)
    with pytest.raises(FeatureError, match="square"):
        texture.glcm_features(np.zeros((3, 4)))


OPS = {
    "rot90": lambda a: np.rot90(a, 1), "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3), "fliplr": np.fliplr, "flipud": np.flipud,
    "transpose": lambda a: np.swapaxes(a, 0, 1),
}


@pytest.mark.parametrize("op", list(OPS))
def test_invariance_flips_and_rotations(crops, op):
    """GLCM (4-angle mean summed as (0+90)+(45+135)) and granularity (integer sums, diamond)
    are bit-identical; the LBP histogram can only change at pixels whose bilinear sample
    ties the centre (float rounding decides those bits, as in scikit-image)."""
    f = OPS[op]
    is_lbp = np.array(["_Lbp_" in n for n in NAMES])
    for label, crop in crops[::2]:
        rot = Crop(np.ascontiguousarray(f(crop.image)), np.ascontiguousarray(f(crop.nucleus)),
                   np.ascontiguousarray(f(crop.cytoplasm)), (0, 0))
        v0, v1 = texture.compute_array(crop), texture.compute_array(rot)
        np.testing.assert_array_equal(v1[~is_lbp], v0[~is_lbp], err_msg=f"{label} {op}")
        lab0, lab1 = texture.region_labels(crop), texture.region_labels(rot)
        for p, rad in texture.LBP_PARAMS:
            h0 = texture.lbp_histograms(crop.gray, lab0, p, rad)
            h1 = texture.lbp_histograms(rot.gray, lab1, p, rad)
            ties = ref.texture_lbp_tie_pixels(crop.gray, p, rad)
            for a, m in ((0, crop.nucleus), (1, crop.cytoplasm)):
                assert h0[a].sum() == h1[a].sum()
                assert np.abs(h1[a] - h0[a]).sum() <= 2 * np.count_nonzero(ties & m), \
                    (label, op, p, a)


@pytest.mark.parametrize("name", ["dataset1/001", "dataset1/150", "dataset2/001", "dataset2/021"])
def test_expert_masks_second_domain(data_dir, name):
    """segwbc images (other scanners, other stain) with the experts' masks: the references
    agree there too and every feature is finite."""
    from morphocell.segmentation.masks import CellMasks

    img = read_image(data_dir / "segwbc" / f"{name}_image.png")
    masks = CellMasks.from_label_image(read_mask(data_dir / "segwbc" / f"{name}_mask.png"))
    crop = make_crop(img, masks)
    q = texture.quantize(crop.gray)
    lab = texture.region_labels(crop)
    har = texture.haralick(texture.glcm_counts(q, lab), len(texture.DISTANCES))
    for r, m in enumerate(_masks(crop)):
        for di, d in enumerate(texture.DISTANCES):
            np.testing.assert_allclose(har[r, di], ref.texture_haralick_mahotas(q, m, d),
                                       rtol=1e-9, atol=1e-12)
        h = texture.lbp_histograms(crop.gray, lab, 16, 2)
        np.testing.assert_array_equal((h[0], h[1], h[0] + h[1])[r],
                                      ref.texture_lbp_counts(crop.gray, m, 16, 2))
    assert np.isfinite(texture.compute_array(crop)).all()


def read_mask(path):
    from PIL import Image

    return np.asarray(Image.open(path))


def test_extract_features_end_to_end(crops, pbc_small):
    img = read_image(pbc_small[0][0])
    row = extract_features(img, families=("texture",))
    assert list(row) == NAMES
    np.testing.assert_array_equal(np.array(list(row.values())),
                                  texture.compute_array(make_crop(img, segment(img))))


def test_lbp_histograms_rejects_labels_other_than_0_1_2():
    gray = np.zeros((8, 8), np.uint8)
    with pytest.raises(FeatureError, match="region labels"):
        texture.lbp_histograms(gray, np.full((8, 8), 3, np.uint8), 8, 1.0)
