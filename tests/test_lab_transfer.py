"""benchmarks/lab_transfer.py: the scoring rules and a --quick run on real data."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import DATA, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import lab_transfer as lt


def test_score_count_error_and_present_classes():
    classes = ["a", "b", "c", "z"]  # z: a model class absent from the lab, never predicted
    y = np.array(["a"] * 6 + ["b"] * 3 + ["c"])
    proba = np.zeros((10, 4))
    proba[:, 3] = 0.9  # the absent class has the top probability everywhere
    proba[np.arange(10), [0] * 5 + [1] * 5] += 0.05  # 5 x a, 5 x b
    s = lt.score(y, proba, classes)
    # predicted shares a .5 b .5 c 0 against .6 .3 .1: (.1 + .2 + .1) / 2
    assert s["count_error"] == pytest.approx(0.2)
    assert s["accuracy"] == pytest.approx(0.8)  # 5 a right, 3 b right
    assert set(s["recall"]) == {"a", "b", "c"}


def test_score_count_error_from_probabilities():
    y = np.array(["a", "a", "a", "b"])
    proba = np.array([[0.8, 0.2, 0.0]] * 3 + [[0.4, 0.6, 0.0]]) * 0.5
    proba[:, 2] = 0.5  # a class absent from the lab: left out, the rest renormalised
    s = lt.score(y, proba, ["a", "b", "z"])
    assert s["count_error"] == pytest.approx(0.0)  # arg-max shares .75 / .25, as true
    # mean probabilities a (3 x .8 + .4) / 4 = .7, b .3 against .75 / .25
    assert s["count_error_proba"] == pytest.approx(0.05)


def test_draw_labelled_small_classes_give_half():
    y = np.array(["a"] * 30 + ["b"] * 6 + ["c"])
    idx = lt.draw_labelled(y, 5, np.random.default_rng(0))
    got = {c: int((y[idx] == c).sum()) for c in "abc"}
    assert got == {"a": 5, "b": 3, "c": 0}
    assert len(set(idx.tolist())) == len(idx)


@pytest.mark.slow
def test_quick_run(data_dir, tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "lab_transfer.py"), "--data", str(DATA),
         "--out", str(out), "--work", str(tmp_path / "work"), "--quick", "--learner", "lr"],
        capture_output=True, text=True, timeout=1200, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "lab_transfer.json").read_text())
    assert set(res["labs"]) == set(lt.LABS)
    for lab, r in res["labs"].items():
        rows = r["rows"]
        assert {"k0_asis", "k0_adapt", "k0_self", "k1", "k5", "ceiling"} <= set(rows), lab
        for key, v in rows.items():
            assert 0 <= v["accuracy"] <= 1 and 0 <= v["count_error"] <= 1, (lab, key)
        assert lab != "pbc" or set(r["target_counts"]) <= {
            "basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"}
        assert (out / f"learning_curve_{lab}.png").stat().st_size > 1000
    assert "| bccd |" in (out / "lab_transfer.md").read_text()
    # BCCD crops come from even-numbered fields only
    crops = list((tmp_path / "work" / "bccd_crops").glob("*.png"))
    assert crops and all(int(p.stem.split("_")[1]) % 2 == 0 for p in crops)


def test_features_option_parses_and_rejects_unknown_values(capsys):
    for bad in (["--features", "cnn"], ["--ks", "1,x"], ["--ks", "0"]):
        with pytest.raises(SystemExit) as e:
            lt.main(["--data", str(DATA), *bad])
        assert e.value.code == 2, bad
        capsys.readouterr()
    with pytest.raises(ValueError, match="unknown CNN setting"):
        lt.cnn_settings({"depth": 3})
    assert lt.cnn_reduced(lt.cnn_settings())  # the defaults are smaller than the embedder's
    assert not lt.cnn_reduced(lt.cnn_settings({"input_size": 128, "embedding_dim": 256,
                                               "epochs": 30}))


def _fold_tables(data, n_src=24, n_tgt=10):
    """Source: segwbc dataset2 images; target: a few segwbc dataset1 images (real files)."""
    import pandas as pd

    src = pd.DataFrame(lt.lab_rows(data, "segwbc_d2", data / "unused"))
    src = src[src["label"].isin(["lymphocyte", "neutrophil"])].head(n_src)
    tgt = pd.DataFrame(lt.lab_rows(data, "segwbc_d1", data / "unused")).head(n_tgt)
    return src.assign(domain="segwbc_d2").reset_index(drop=True), tgt


def test_fold_embeddings_refuses_held_out_images_in_training(data_dir, tmp_path):
    src, tgt = _fold_tables(data_dir)
    leaky = src.copy()
    leaky.loc[0, "path"] = tgt["path"].iloc[0]
    with pytest.raises(lt.DataError, match="held-out image"):
        lt.fold_embeddings(leaky, tgt, "segwbc_d1", tmp_path, lt.cnn_settings(), 0)
    with pytest.raises(lt.DataError, match="held-out image"):
        lt.fold_embeddings(src.assign(domain="segwbc_d1"), tgt, "segwbc_d1", tmp_path,
                           lt.cnn_settings(), 0)
    assert not list(tmp_path.iterdir())


@pytest.mark.deep
@pytest.mark.slow
def test_fold_embeddings_rows_cache_and_failures(data_dir, tmp_path):
    pytest.importorskip("tensorflow")
    src, tgt = _fold_tables(data_dir)
    cnn = lt.cnn_settings({"architecture": "small-cnn", "input_size": 32,
                           "embedding_dim": 8, "epochs": 1, "augment": "none"})
    Es, Et, Pt, classes, info = lt.fold_embeddings(src, tgt, "segwbc_d1", tmp_path, cnn, 0)
    assert Es.shape == (len(src), 8) and Et.shape == (len(tgt), 8)  # every row, in order
    assert np.isfinite(Es).all() and np.isfinite(Et).all()
    assert classes == ["lymphocyte", "neutrophil"] and Pt.shape == (len(tgt), 2)
    assert np.allclose(Pt.sum(axis=1), 1, atol=1e-4)
    assert not info["cached"] and info["n_source"] == len(src)
    again = lt.fold_embeddings(src, tgt, "segwbc_d1", tmp_path, cnn, 0)
    assert again[4]["cached"]
    for a, b in zip(again[:3], (Es, Et, Pt)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # other settings or other source images: another cache entry, not the stored one
    assert lt._cache_name("segwbc_d1", {**cnn, "epochs": 2}, 0, src, tgt) != \
        lt._cache_name("segwbc_d1", cnn, 0, src, tgt)
    assert lt._cache_name("segwbc_d1", cnn, 0, src.head(20), tgt) != \
        lt._cache_name("segwbc_d1", cnn, 0, src, tgt)
    # an unreadable target image is an error naming it, never a dropped row
    bad = tgt.copy()
    bad.loc[1, "path"] = str(tmp_path / "missing.png")
    with pytest.raises(lt.DataError, match="could not be embedded"):
        lt.fold_embeddings(src, bad, "segwbc_d1", tmp_path / "w2", cnn, 0)
