"""benchmarks/cross_lab.py: the pieces (subsets, restricted prediction, scoring, data reading,
augmented copies, tables). The full run is the benchmark's own job (minutes); these take
seconds."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from morphocell.errors import DataError
from morphocell.features import registry
from morphocell.features.extractor import feature_names


@pytest.fixture(scope="module")
def cl():
    spec = importlib.util.spec_from_file_location("cross_lab", REPO / "benchmarks" /
                                                  "cross_lab.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cross_lab"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_feature_subsets(cl):
    names = feature_names()
    sub = cl.feature_subsets(names)
    assert sub["all"] == names
    spec = {s.name: s for s in registry.specs(("shape", "color", "texture"))}
    assert sub["no_colour"] and not any(spec[n].family == "color" for n in sub["no_colour"])
    assert not any(spec[n].unit in ("px", "px2", "px-1") for n in sub["scale_invariant"])
    assert not any("Granularity" in n for n in sub["scale_invariant"])
    inv = sub["invariant"]
    assert inv and all((spec[n].family == "shape" and spec[n].unit in ("1", "rad"))
                       or "_Texture_Lbp_" in n for n in inv)
    assert "Nucleus_Shape_Area" not in inv and "Nucleus_Shape_Solidity" in inv
    for fs in (*cl.FEATURE_SETS, *cl.AUG_FEATURE_SETS):
        assert set(sub[fs]) <= set(names)


class _Model:
    classes_ = np.array(["basophil", "eosinophil", "ig", "lymphocyte", "monocyte",
                         "neutrophil", "platelet"])

    def predict_proba(self, X):
        return np.asarray(X, float)


def test_restricted_predict_ignores_other_classes(cl):
    #           baso  eos   ig    lymph mono  neut  plt
    P = [[0.00, 0.10, 0.80, 0.05, 0.03, 0.02, 0.00],   # ig wins overall, eosinophil of the 5
         [0.10, 0.00, 0.00, 0.00, 0.00, 0.20, 0.70]]   # platelet wins, neutrophil of the 5
    assert cl.restricted_predict(_Model(), P).tolist() == ["eosinophil", "neutrophil"]


def test_score(cl):
    y = ["neutrophil", "neutrophil", "lymphocyte", "monocyte"]
    p = ["neutrophil", "lymphocyte", "lymphocyte", "monocyte"]
    r = cl.score(y, p)
    assert r["accuracy"] == 0.75 and r["n"] == 4
    assert r["recall"]["neutrophil"] == 0.5 and r["recall"]["basophil"] == 0.0
    assert np.array(r["confusion_matrix"]).sum() == 4


def test_sanitize(cl):
    X = np.array([[1.0, np.nan, np.inf], [1e50, -2.0, 3.0]])
    Y, n = cl.sanitize(X)
    assert n == 2 and np.isnan(Y[0, 2]) and np.isnan(Y[1, 0]) and Y[1, 1] == -2.0


def test_read_segwbc_errors(cl, tmp_path):
    with pytest.raises(DataError):
        cl.read_segwbc(tmp_path)
    (tmp_path / "labels.csv").write_text("image_id,label\n001,platelet\n")
    with pytest.raises(DataError, match="platelet"):
        cl.read_segwbc(tmp_path)
    (tmp_path / "labels.csv").write_text("image_id,label\n001,neutrophil\n")
    with pytest.raises(DataError, match="not found"):
        cl.read_segwbc(tmp_path)


def test_real_segwbc_labels(cl, data_dir):
    for name in cl.DATASETS:
        items = cl.read_segwbc(data_dir / "segwbc" / name)
        assert items and {it["label"] for it in items} <= set(cl.CLASSES)


def test_augmented_copies_are_reused(cl, data_dir, tmp_path):
    rows = [r for r in cl.read_pbc_split(data_dir) if r["split"] == "train"]
    a = cl.augmented_copies(rows, 1, 0, tmp_path)
    assert len(a) == 8 and all(r["path"].endswith(".jpg") for r in a)
    first = {r["path"]: Path(r["path"]).read_bytes() for r in a}
    for r in a[:2]:
        Path(r["path"]).unlink()
    b = cl.augmented_copies(rows, 1, 0, tmp_path)  # re-created: same seed, same bytes
    assert all(Path(r["path"]).read_bytes() == first[r["path"]] for r in b)


def test_markdown_and_outputs(cl, tmp_path):
    row = {"learner": "xgb", "training": "pbc", "features": "all", "n_features": 3,
           "accuracy": 0.5, "macro_f1": 0.4, "n": 2, "recall": {c: 0.0 for c in cl.CLASSES},
           "confusion_matrix": np.zeros((5, 5), int).tolist()}
    rows = [{**row, "dataset": ds, "preprocessing": "none", "method": "xgb | pbc | all | none"}
            for ds in ("pbc_test", *cl.DATASETS)]
    res = {"rows": rows, "settings": {"n_train": 8, "quick": True, "random_state": 0,
                                      "machine": "m",
                                      "targets": {"n_pbc_images": 1, "rbc_diameter_px": 60.0,
                                                  "rbc_found_rate": 1.0,
                                                  "reinhard_lab_mean": [1, 2, 3],
                                                  "reinhard_lab_std": [1, 2, 3]}},
           "segmentation": {}, "scale": {}, "timings_s": {}, "wall_s": 1.0}
    cl.write_outputs(res, tmp_path / "o")
    md = (tmp_path / "o" / "cross_lab.md").read_text()
    assert "| xgb | pbc | all (3) | none | 0.500 / 0.400 | 0.500 / 0.400 | 0.500 / 0.400 |" in md
    assert (tmp_path / "o" / "cross_lab.json").is_file()
