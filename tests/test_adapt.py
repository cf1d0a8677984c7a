"""morphocell.adapt: class priors by EM, lab statistics, adaptation of a real model file."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import DATA

from morphocell import adapt as ad

from morphocell.ensembles import lab_adaptive as la


# -- priors and statistics (synthetic, exact posteriors) --------------------------------------
def _gauss_posteriors(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Posteriors of unit-variance Gaussian classes with equal priors."""
    ll = -0.5 * ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    p = np.exp(ll - ll.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shift", [(0.7, 0.2, 0.1), (0.05, 0.15, 0.8)])
def test_reestimate_priors_recovers_label_shift(shift):
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    n = 6000
    y = rng.choice(3, n, p=shift)
    x = means[y] + rng.normal(size=(n, 2))
    p = _gauss_posteriors(x, means)
    naive = np.bincount(p.argmax(axis=1), minlength=3) / n
    priors, adj = la.reestimate_priors(p)
    assert np.abs(priors - np.asarray(shift)).max() < 0.03
    # the adjusted posteriors count better than the training-prior ones
    got = np.bincount(adj.argmax(axis=1), minlength=3) / n
    assert np.abs(got - shift).sum() < np.abs(naive - shift).sum()
    assert np.allclose(adj.sum(axis=1), 1.0)


def test_balanced_stats_ignore_proportions_and_follow_scale():
    rng = np.random.default_rng(1)
    a = rng.normal([10.0, 100.0], [1.0, 5.0], size=(50, 2))
    b = rng.normal([20.0, 300.0], [2.0, 9.0], size=(50, 2))
    X = np.vstack([a, b])
    W = np.repeat(np.eye(2), 50, axis=0)
    loc, scale = la.balanced_stats(X, W)
    # ten times as many cells of class a: the same statistics
    X2 = np.vstack([np.repeat(a, 10, axis=0), b])
    W2 = np.vstack([np.repeat(W[:50], 10, axis=0), W[50:]])
    loc2, scale2 = la.balanced_stats(X2, W2)
    assert np.allclose(loc, loc2) and np.allclose(scale, scale2)
    # pixels twice as large: lengths x2 -> loc and scale x2, z unchanged
    loc3, scale3 = la.balanced_stats(2 * X, W)
    assert np.allclose(loc3, 2 * loc) and np.allclose(scale3, 2 * scale)
    # NaN cells are ignored per column
    Xn = X.copy()
    Xn[0, 0] = np.nan
    assert np.isfinite(la.balanced_stats(Xn, W)[0]).all()



def _synthetic_lab(rng, n_per_class, a, b, classes):
    """Cells of 4 Gaussian classes in 3 features, the lab's affine map x -> a x + b."""
    means = np.array([[0, 0, 0], [3, 0, 1], [0, 3, -1], [3, 3, 2]], float)
    y = np.repeat(np.arange(4), n_per_class)
    x = means[y] + rng.normal(scale=0.7, size=(len(y), 3))
    return a * x + b, np.asarray(classes)[y]


def test_batch_statistics_em_converges_to_the_labelled_statistics():
    """A new lab (another affine map of the features, mostly neutrophils): each EM round
    brings the statistics closer to the ones its labels would give; with a high round limit
    the EM stops at a fixed point near them."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    classes = list(la.ANCHOR_CLASSES)
    parts = [_synthetic_lab(rng, [80, 80, 80, 80], np.array([1.0, 2.0, 0.5]),
                            np.array([0.0, 5.0, -2.0]), classes),
             _synthetic_lab(rng, [80, 80, 80, 80], np.array([1.5, 1.0, 1.0]),
                            np.array([2.0, 0.0, 1.0]), classes)]
    X = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    dom = np.repeat(["a", "b"], 320)
    model = la.LabAdaptiveClassifier(LogisticRegression(max_iter=500), random_state=0)
    model.fit(X, y, domains=dom)
    Xt, yt = _synthetic_lab(rng, [60, 300, 40, 20], np.array([0.7, 2.5, 1.3]),
                            np.array([-3.0, 8.0, 0.5]), classes)
    onehot = (yt[:, None] == np.asarray(classes)[None, :]).astype(float)
    loc_true, scale_true = la.balanced_stats(Xt, onehot, min_weight=1.0)

    def err(loc, scale):
        return float(np.max(np.abs(loc - loc_true) / scale_true)
                     + np.max(np.abs(np.log(scale / scale_true))))

    loc1, scale1, _ = la.batch_statistics(model, Xt, n_iter=1)
    loc, scale, _ = la.batch_statistics(model, Xt)
    assert err(loc, scale) < err(loc1, scale1)
    # with a high round limit it stops at a fixed point (one more round changes nothing),
    # near the labelled statistics, and classifies as well as they do
    loc2, scale2, proba = la.batch_statistics(model, Xt, n_iter=100)
    loc3, scale3, _ = la.batch_statistics(model, Xt, n_iter=101)
    assert np.allclose(loc2, loc3) and np.allclose(scale2, scale3)
    assert err(loc2, scale2) < 0.15
    _, oracle = la.reestimate_priors(model._combine(model.standardize(Xt, loc_true,
                                                                      scale_true)))
    acc = (model.classes_[proba.argmax(axis=1)] == yt).mean()
    assert acc >= (model.classes_[oracle.argmax(axis=1)] == yt).mean() - 0.02


def test_leave_one_lab_out_counts_classes_no_other_lab_has():
    """Two labs that differ by an affine change of every feature (another pixel size and
    stain): each scored by a model of the other; lab a's basophils, a class lab b lacks, are
    counted apart."""
    rng = np.random.default_rng(2)
    means = {"neutrophil": [0.0, 0.0, 0.0], "lymphocyte": [4.0, 0.0, 2.0],
             "basophil": [0.0, 4.0, -2.0]}
    X, y, dom = [], [], []
    for lab, classes, a, b in (("a", ("neutrophil", "lymphocyte", "basophil"), 1.0, 0.0),
                               ("b", ("neutrophil", "lymphocyte"), 2.5, 10.0)):
        for c in classes:
            z = np.asarray(means[c]) + rng.normal(size=(30, 3))
            X.append(a * z + b)
            y += [c] * 30
            dom += [lab] * 30
    X = np.vstack(X)
    res = ad.leave_one_lab_out(X, y, dom, estimator=la.head_learner(0), random_state=0)
    a, b = res["labs"]["a"], res["labs"]["b"]
    assert (a["n"], a["n_unknown_class"], b["n"], b["n_unknown_class"]) == (90, 30, 60, 0)
    # the basophils count as errors in accuracy, not in accuracy_known_classes
    assert a["accuracy"] == pytest.approx(a["accuracy_known_classes"] * 60 / 90)
    assert a["accuracy_known_classes"] > 0.9 and b["accuracy"] > 0.9
    assert a["standardised_on"] == b["standardised_on"] == "batch"
    assert res["mean_accuracy"] == pytest.approx((a["accuracy"] + b["accuracy"]) / 2)
    assert ad.leave_one_lab_out(X, y, ["a"] * len(y)) is None


# -- a real model file ------------------------------------------------------------------------
def _segwbc(n: int, limit: int):
    folder = DATA / "segwbc" / f"dataset{n}"
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:limit]
    return ([str(folder / f"{r['image_id']}_image.png") for r in rows],
            [r["label"].strip() for r in rows])


@pytest.fixture(scope="module")
def tiny_model(data_dir, tmp_path_factory):
    """A lab-adaptive model (fast head learner) trained on two real labs: 90 segwbc
    dataset1 cells and the 40 of dataset2; saved as a model file."""
    import pandas as pd

    from morphocell.features import extractor
    from morphocell.model_io import save_model

    p1, y1 = _segwbc(1, 90)
    p2, y2 = _segwbc(2, 40)
    paths, y = p1 + p2, np.array(y1 + y2)
    dom = np.array(["d1"] * len(p1) + ["d2"] * len(p2))
    mat, st, _ = extractor.extract_batch(paths, n_jobs=1)
    ok = np.array([s == "ok" for s in st])
    X = pd.DataFrame(mat[ok], columns=extractor.feature_names(None))
    model = ad.train_multilab(X, y[ok], dom[ok], estimator=la.head_learner(0), random_state=0)
    path = tmp_path_factory.mktemp("adapt") / "tiny.mcm"
    save_model(model, path)
    return path


def _sample(classes=("neutrophil", "lymphocyte", "monocyte", "eosinophil")):
    from morphocell.datasets import sample_folder
    from morphocell.io import load_folder

    paths, labels = load_folder(sample_folder())
    keep = [i for i, lab in enumerate(labels) if lab in classes]
    return [paths[i] for i in keep], [labels[i] for i in keep]


def test_adapt_unlabelled_writes_loadable_model_with_provenance(tiny_model, tmp_path):
    from morphocell.model_io import load_model
    from morphocell.predict import predict_paths

    paths, _ = _sample()
    assert len(paths) >= ad.MIN_UNLABELLED
    out, _, _ = ad.adapt_file(tiny_model, _flat_folder(paths, tmp_path / "cells"),
                              tmp_path / "adapted.mcm")
    back = load_model(out)
    prov = back.metadata["adapted"]
    from morphocell._utils import file_sha256

    assert prov["base_model_sha256"] == file_sha256(tiny_model)
    assert len(prov["target_data_sha256"]) == 64
    assert prov["method"] == "unsupervised+self-training"
    assert prov["n_used"] == len(paths) and prov["n_labelled"] == 0
    assert abs(sum(prov["priors"].values()) - 1) < 1e-6
    res = predict_paths(back, paths)
    proba = res["proba"]
    assert proba.shape == (len(paths), len(back.classes))
    assert np.allclose(proba.sum(axis=1), 1.0)


def _flat_folder(paths, folder):
    import shutil

    folder.mkdir(parents=True)
    for i, p in enumerate(paths):
        shutil.copy(p, folder / f"{i:03d}_{p.split('/')[-1]}")
    return folder


def test_adapt_labelled_reports_cv_and_beats_nothing(tiny_model, tmp_path):
    from morphocell.model_io import load_model

    paths, labels = _sample()
    adapted, info = ad.adapt(tiny_model, paths, labels)
    cv = info["cv"]
    assert cv is not None and cv["n"] == len(paths) and 0 <= cv["accuracy"] <= 1
    assert adapted.metadata["adapted"]["method"] == "few-shot"
    assert adapted.metadata["adapted"]["labelled_counts"] == {
        c: labels.count(c) for c in sorted(set(labels))}
    from morphocell.model_io import save_model

    save_model(adapted, tmp_path / "a.mcm")
    back = load_model(tmp_path / "a.mcm")
    assert back.metadata["adapted"]["cv"]["accuracy"] == cv["accuracy"]


def test_adapt_bad_inputs(tiny_model, tmp_path):
    paths, labels = _sample()
    with pytest.raises(ad.AdaptError, match="at least 20"):
        ad.adapt(tiny_model, paths[:5])
    import morphocell

    with pytest.raises(ad.AdaptError, match="at least 20"):  # the module is callable
        morphocell.adapt(tiny_model, paths[:5])
    with pytest.raises(ad.AdaptError, match="not known to the model"):
        ad.adapt(tiny_model, paths[:4], ["neutrophil", "blast", "lymphocyte", "monocyte"])
    junk = []
    for i in range(25):
        f = tmp_path / f"junk{i}.png"
        f.write_bytes(b"not an image")
        junk.append(str(f))
    with pytest.raises(ad.AdaptError, match="none of the 25 images"):
        ad.adapt(tiny_model, junk)
    # a labelled class whose only images fail
    with pytest.raises(ad.AdaptError, match="no cell that could be measured"):
        ad.adapt(tiny_model, paths[:3] + junk[:1], labels[:3] + ["basophil"])


def test_cli_adapt_exit_2_and_no_file(tiny_model, tmp_path, capsys):
    from morphocell.cli import main

    paths, _ = _sample()
    folder = _flat_folder(paths[:5], tmp_path / "few")
    out = tmp_path / "x.mcm"
    code = main(["adapt", str(tiny_model), str(folder), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "at least 20" in err[0]
    assert not out.exists()


def test_cli_adapt_labelled_prints_cv(tiny_model, tmp_path, capsys):
    from morphocell.cli import main

    paths, labels = _sample()
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(zip(paths, labels, strict=True))
    out = tmp_path / "y.mcm"
    code = main(["adapt", str(tiny_model), str(manifest), "--out", str(out), "-q"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "cross-validated on the labelled cells" in text and out.is_file()


def test_default_model_predicts_bundled_sample(data_dir):
    from morphocell.datasets import sample_folder
    from morphocell.io import load_folder
    from morphocell.model_io import load_model
    from morphocell.predict import predict_paths

    model = load_model("default")
    assert ad._final_adaptive(model.estimator) is not None
    paths, labels = load_folder(sample_folder())
    res = predict_paths(model, paths)
    ok = np.array([s == "ok" for s in res["statuses"]])
    pred = np.asarray(model.classes)[np.nanargmax(res["proba"][ok], axis=1)]
    acc = float((pred == np.asarray(labels)[ok]).mean())
    assert ok.mean() > 0.9
    assert acc >= 0.9, json.dumps({"accuracy": acc})


def test_cli_adapt_reads_folders_by_layout(tiny_model, tmp_path, capsys):
    """``--layout`` as in the other sub-commands: a folder of images and subfolders is an
    error naming both under ``auto``; ``--layout flat`` reads its images (here too few)."""
    from morphocell.cli import main

    paths, _ = _sample()
    folder = _flat_folder(paths[:5], tmp_path / "mixed")
    (folder / "sub").mkdir()
    out = tmp_path / "x.mcm"
    code = main(["adapt", str(tiny_model), str(folder), "--out", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--layout flat" in err[0]
    code = main(["adapt", str(tiny_model), str(folder), "--out", str(out), "-q",
                 "--layout", "flat"])
    err = capsys.readouterr().err
    assert code == 2 and "at least 20 images; got 5" in err
    assert "ignored 1 folder" in err and not out.exists()
