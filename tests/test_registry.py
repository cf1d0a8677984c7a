"""The feature registry: every registered name is computed by a family and documented, every
computed column is registered, and every name follows the convention."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np
import pytest

from morphocell.errors import FeatureError
from morphocell.features import extractor, registry
from morphocell.features.base import FeatureFamily, make_crop
from morphocell.features.extractor import extract_array, feature_names
from morphocell.io import read_image
from morphocell.segmentation import segment

FAMILIES = ("shape", "color", "texture")
# {Region}_{Family}_{Feature}[_{Channel}][_{Param}]: CamelCase (or numeric) tokens, one "_"
# between fields
CONVENTION = re.compile(r"^(Nucleus|Cytoplasm|Cell)_(Shape|Color|Texture)_[A-Z][A-Za-z0-9]*"
                        r"(_[A-Za-z0-9]+)*$")


def _family(name: str):
    return importlib.import_module(f"morphocell.features.{name}")


@pytest.fixture(scope="module")
def crops(data_dir):
    """Crops of one real PBC image per class (every family runs on them)."""
    from conftest import pbc_subset

    out = []
    for path, _ in pbc_subset(1):
        img = read_image(path)
        out.append(make_crop(img, segment(img)))
    return out


@pytest.fixture
def fresh_layout():
    """Forget the extractor's cached names and layouts before and after a test that changes
    the registry or a family."""
    for f in (extractor._names, extractor._modules, extractor._layout):
        f.cache_clear()
    yield
    for f in (extractor._names, extractor._modules, extractor._layout):
        f.cache_clear()


def test_every_family_follows_the_protocol():
    for fam in FAMILIES:
        mod = _family(fam)
        assert isinstance(mod, FeatureFamily), fam
        assert isinstance(mod.NAMES, tuple) and all(isinstance(n, str) for n in mod.NAMES)
        # NAMES and specs() describe the same columns in the same order
        assert mod.NAMES == tuple(s.name for s in mod.specs()), fam
        assert all(s.family == fam for s in mod.specs())


def test_registered_names_are_exactly_the_computed_columns(crops):
    """Every registered name is computed by some family, every computed column is registered
    (no name twice), and each family's vector has one value per name on real cells."""
    produced = [n for fam in FAMILIES for n in _family(fam).NAMES]
    assert len(produced) == len(set(produced))
    assert set(registry.names()) == set(produced)
    assert set(feature_names()) == set(produced)
    for fam in FAMILIES:
        assert registry.names([fam]) == list(_family(fam).NAMES), fam
    for crop in crops:
        for fam in FAMILIES:
            vec = _family(fam).compute_array(crop)
            assert vec.dtype == np.float64 and vec.shape == (len(_family(fam).NAMES),), fam
            assert np.isfinite(vec).mean() > 0.95, fam  # a measured cell, not a NaN row


def test_extractor_columns_are_the_families_values(data_dir):
    """extract_array puts each family's value under its registered name (any family order)."""
    from conftest import pbc_subset

    img = read_image(pbc_subset(1, offset=3)[0][0])
    masks = segment(img)
    crop = make_crop(img, masks)
    for fams in (FAMILIES, ("texture", "shape"), ("color",)):
        vec, _ = extract_array(img, masks, fams)
        names = feature_names(fams)
        assert len(names) == vec.size == sum(len(_family(f).NAMES) for f in fams)
        for fam in fams:
            want = _family(fam).compute(crop)
            got = {n: v for n, v in zip(names, vec.tolist(), strict=True) if n in want}
            np.testing.assert_array_equal(list(got.values()), [want[n] for n in got], fam)
            assert list(got) == list(want)


def test_every_name_is_documented_and_follows_the_convention():
    specs = registry.specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert names == feature_names()
    for s in specs:
        registry.check_name(s.name)
        assert CONVENTION.match(s.name), s.name
        assert "__" not in s.name
        assert s.name.startswith(f"{s.region}_{registry.FAMILIES[s.family]}_"), s.name
        assert s.unit in registry.UNITS, s.name
        assert s.description.strip(), s.name
        assert (s.formula + s.reference).strip(), s.name


def test_regions_and_families_all_present():
    specs = registry.specs()
    for fam in FAMILIES:
        for region in registry.REGIONS:
            assert any(s.family == fam and s.region == region for s in specs), (fam, region)


def test_a_registered_name_no_family_computes_is_an_error(monkeypatch, fresh_layout, data_dir):
    img = read_image(pbc_subset_first())
    registry.names()  # load every family first
    ghost = registry.FeatureSpec("Nucleus_Shape_Ghost", "shape", "Nucleus", "1",
                                 "a feature no family computes", "none")
    monkeypatch.setitem(registry._REGISTRY, ghost.name, ghost)
    with pytest.raises(FeatureError, match="computed by no family.*Nucleus_Shape_Ghost"):
        extract_array(img, families=("shape",))


def test_a_computed_column_that_is_not_registered_is_an_error(monkeypatch, fresh_layout,
                                                             data_dir):
    img = read_image(pbc_subset_first())
    shape = _family("shape")
    monkeypatch.setattr(shape, "NAMES", shape.NAMES + ("Nucleus_Shape_Unregistered",))
    with pytest.raises(FeatureError, match="not registered.*Nucleus_Shape_Unregistered"):
        extract_array(img, families=("shape",))


def test_a_family_without_the_protocol_is_an_error(monkeypatch, fresh_layout, data_dir):
    color = _family("color")
    monkeypatch.delattr(color, "NAMES")
    with pytest.raises(FeatureError, match="lacks NAMES"):
        extract_array(read_image(pbc_subset_first()), families=("color",))


def pbc_subset_first() -> str:
    from conftest import pbc_subset

    return pbc_subset(1)[0][0]


def test_bad_names_are_refused():
    for bad in ("Nucleus__Shape_Area", "nucleus_Shape_Area", "Nucleus_Size_Area",
                "Nucleus_Shape_area", "Blob_Shape_Area", "Nucleus_Shape_Area_"):
        with pytest.raises(ValueError):
            registry.check_name(bad)


def test_describe_and_suggestions():
    assert registry.describe("Nucleus_Shape_Area").unit == "px2"
    with pytest.raises(KeyError, match="did you mean"):
        registry.describe("Nucleus_Shape_Aera")


def test_docs_page_is_current():
    page = Path(__file__).resolve().parents[1] / "docs" / "features.md"
    assert page.read_text().strip() == registry.to_markdown().strip(), (
        "docs/features.md is stale: run python -m morphocell.features > docs/features.md")
