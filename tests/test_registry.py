"""The feature registry: every name follows the convention and is documented."""
from __future__ import annotations

from pathlib import Path

import pytest

from morphocell.features import registry
from morphocell.features.extractor import feature_names


def test_every_feature_is_named_and_documented():
    specs = registry.specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert names == feature_names()
    for s in specs:
        registry.check_name(s.name)
        assert s.unit in registry.UNITS
        assert s.description and s.formula, s.name
        assert "__" not in s.name


def test_regions_and_families_all_present():
    specs = registry.specs()
    for fam in ("shape", "color", "texture"):
        for region in registry.REGIONS:
            assert any(s.family == fam and s.region == region for s in specs), (fam, region)


def test_bad_names_are_refused():
    for bad in ("Nucleus__Shape_Area", "nucleus_Shape_Area", "Nucleus_Size_Area",
                "Nucleus_Shape_area", "Blob_Shape_Area"):
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
