"""train / predict / evaluate end to end on real PBC images, differential counts, the cache."""
from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest import pbc_subset
from morphocell.cli import main
from morphocell.errors import MorphocellError
from morphocell.report import (atypical_probability, classification_metrics,
                               differential_count)


def _manifest(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """`morphocell train` on 5 real images per class plus one corrupt and one missing file."""
    tmp = tmp_path_factory.mktemp("train")
    corrupt = tmp / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = pbc_subset(5) + [(str(corrupt), "neutrophil"), (str(tmp / "gone.jpg"), "ig")]
    man = _manifest(tmp / "train.csv", rows)
    model = tmp / "model.mcm"
    return tmp, man, model, rows


def test_train_cli(trained, capsys):
    tmp, man, model, rows = trained
    rc = main(["train", str(man), "--out", str(model), "--cv", "2",
               "--cache-dir", str(tmp / "cache"), "-q"])
    out, err = capsys.readouterr()
    assert rc == 3, err                      # some images failed, the model was still written
    assert model.is_file()
    assert "corrupt.jpg" in err and "gone.jpg" in err and "Traceback" not in err
    assert "CV accuracy" in out and "stack" in out
    assert "40 images used, 2 failed" in out
    explain = tmp / "model_explain"
    top = pd.read_csv(explain / "top_features.csv")
    assert set(top["class"]) == {lab for _, lab in rows[:40]}
    assert (explain / "top_features.png").stat().st_size > 1000
    meta = json.loads((explain / "training.json").read_text())["metadata"]
    assert meta["n_used"] == 40 and meta["n_failed"] == 2 and len(meta["data_sha256"]) == 64
    # on by default: one domain-randomised copy of round(0.35 * 5) = 2 images per class
    assert meta["domain_copies"] == 0.35 and meta["n_domain_copies"] == 16
    assert "over the images and their 16 domain-randomised copies" in out
    # the review threshold, chosen on the 40 images' out-of-fold probabilities (not the copies)
    r = meta["review"]
    assert r["n"] == 40 and r["target_accuracy"] == 0.995
    assert 0 <= r["review_fraction"] <= 1 and "review threshold" in out


def test_predict_cli_and_differential_count(trained, capsys, tmp_path):
    _, _, model, _ = trained
    test_rows = pbc_subset(2, split="test")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    out_csv = tmp_path / "pred.csv"
    rc = main(["predict", str(model), *[p for p, _ in test_rows], str(bad),
               "--out", str(out_csv), "-q"])
    out, err = capsys.readouterr()
    assert rc == 3 and "bad.png" in err and "Traceback" not in err
    df = pd.read_csv(out_csv, keep_default_na=False)
    classes = sorted({lab for _, lab in test_rows})
    assert list(df.columns) == (["path", "predicted"] + [f"p_{c}" for c in classes]
                                + ["p_atypical", "domain_score", "unlike_training",
                                   "needs_review", "status", "error"])
    ok = df[df["status"] == "ok"]
    assert len(ok) == 16 and df.iloc[-1]["status"] == "error"
    assert np.isfinite(ok["domain_score"].astype(float)).all()
    assert df.iloc[-1]["domain_score"] == "" and str(df.iloc[-1]["unlike_training"]) == "False"
    assert "empty file" in df.iloc[-1]["error"]
    P = ok[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    assert (ok["predicted"].to_numpy() == np.asarray(classes)[P.argmax(axis=1)]).all()
    np.testing.assert_allclose(ok["p_atypical"].astype(float),
                               ok["p_erythroblast"].astype(float) + ok["p_ig"].astype(float),
                               atol=2e-6)
    # the differential count agrees with the table
    count = json.loads((tmp_path / "pred_differential.json").read_text())
    vc = ok["predicted"].value_counts()
    assert count["counts"] == {c: int(vc.get(c, 0)) for c in classes}
    assert count["n_classified"] == 16 and count["n_failed"] == 1 and count["n_images"] == 17
    assert abs(sum(count["percent"].values()) - 100) < 0.05
    assert count["flagged"] == [c for c in ("erythroblast", "ig") if vc.get(c, 0) > 0]
    assert "Differential count (16 cells classified, 1 failed)" in out
    assert count["unlike_training"]["n_scored"] == 16
    assert count["unlike_training"]["n"] == int((ok["unlike_training"].astype(str) == "True").sum())
    assert "are unlike the training images" in out + err
    # cells below the model's confidence threshold need review; a failed image does not
    from morphocell.model_io import load_model

    thr = load_model(model).metadata["review"]["threshold"]
    flag = (ok["needs_review"].astype(str) == "True").to_numpy()
    conf = P.max(axis=1)
    far = np.abs(conf - thr) > 1e-6             # the CSV rounds to 6 decimals
    assert (flag[far] == (conf[far] < thr)).all()
    assert str(df.iloc[-1]["needs_review"]) == "False"
    assert count["needs_review"]["n"] == int(flag.sum())
    assert count["needs_review"]["threshold"] == thr and "need review" in out
    marked = ok.loc[flag, "predicted"].value_counts()
    assert count["needs_review"]["by_class"] == {c: int(marked.get(c, 0)) for c in classes}
    ex = count["needs_review"]["excess"]   # more marked than on the training images?
    assert set(ex) == {"ratio", "p_value", "harder"}
    assert ("need review, against" in err) == ex["harder"]
    assert "review" in out.splitlines()[1]  # a column of the printed table
    # --review-threshold overrides it: 1 marks every classified cell, 0 none
    for thr2, n2 in ((1.0, 16), (0.0, 0)):
        main(["predict", str(model), *[p for p, _ in test_rows], str(bad),
              "--out", str(tmp_path / "p3.csv"), "--review-threshold", str(thr2), "-q"])
        c3 = json.loads((tmp_path / "p3_differential.json").read_text())
        assert c3["needs_review"]["n"] == n2
        assert c3["needs_review"]["source"] == "--review-threshold"
    capsys.readouterr()
    assert main(["predict", str(model), str(bad), "--review-threshold", "1.5"]) == 2
    # a user-chosen atypical set
    rc = main(["predict", str(model), test_rows[0][0], "--out", str(tmp_path / "p2.csv"),
               "--atypical", "basophil", "-q"])
    d2 = pd.read_csv(tmp_path / "p2.csv")
    assert rc == 0 and np.isclose(d2["p_atypical"][0], d2["p_basophil"][0])


def test_models_without_a_review_threshold_get_no_review_column(trained, tmp_path, capsys):
    """Models written before the review threshold existed predict as before."""
    from morphocell.model_io import load_model, save_model

    _, _, model, _ = trained
    m = load_model(model)
    del m.metadata["review"]
    old = tmp_path / "old.mcm"
    save_model(m, old)
    img = pbc_subset(1, split="test")[0][0]
    assert main(["predict", str(old), img, "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    assert "needs_review" not in pd.read_csv(tmp_path / "p.csv").columns
    assert "needs_review" not in json.loads((tmp_path / "p_differential.json").read_text())
    assert "need review" not in capsys.readouterr().out
    # ... unless a threshold is given
    assert main(["predict", str(old), img, "--out", str(tmp_path / "q.csv"), "-q",
                 "--review-threshold", "1"]) == 0
    assert pd.read_csv(tmp_path / "q.csv")["needs_review"].tolist() == [True]


def test_evaluate_cli_json_and_files(trained, capsys, tmp_path):
    _, _, model, _ = trained
    test_rows = pbc_subset(3, split="test")
    man = _manifest(tmp_path / "test.csv", test_rows)
    rc = main(["evaluate", str(model), str(man), "--json", "--out", str(tmp_path / "rep"), "-q"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = json.loads(out)                       # stdout holds exactly one JSON object
    assert m["n_images"] == 24 and m["n_failed"] == 0
    pred = pd.read_csv(tmp_path / "rep" / "predictions.csv")
    acc = float((pred["predicted"] == pred["label"]).mean())
    assert m["accuracy"] == pytest.approx(acc)
    assert acc > 0.5                          # 5 training images per class; chance is 1/8
    assert set(m["per_class"]) == {lab for _, lab in test_rows}
    f1 = [r["f1"] for r in m["per_class"].values()]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert all(r["support"] == 3 for r in m["per_class"].values())
    assert all(0 <= r["roc_auc"] <= 1 for r in m["per_class"].values())
    cm = pd.read_csv(tmp_path / "rep" / "confusion_matrix.csv", index_col=0)
    assert cm.to_numpy().sum() == 24 and np.trace(cm.to_numpy()) == round(acc * 24)
    assert (tmp_path / "rep" / "confusion_matrix.png").stat().st_size > 1000
    assert set(m["base_learners"]) == {"rf", "svc", "xgb"}
    # the cells below the review threshold, and the accuracy on the others, match the table
    r = m["review"]
    flag = pred["needs_review"].astype(bool).to_numpy()
    right = (pred["predicted"] == pred["label"]).to_numpy()
    assert r["n_review"] == flag.sum() and r["review_fraction"] == pytest.approx(flag.mean())
    if (~flag).any():
        assert r["accepted_accuracy"] == pytest.approx(right[~flag].mean())
    # the curve a lab picks its own threshold from: its row at the model's threshold is the
    # same split of the cells
    curve = pd.read_csv(tmp_path / "rep" / "review_curve.csv")
    assert curve["threshold"].is_monotonic_decreasing
    assert curve["review_fraction"].is_monotonic_decreasing
    assert curve["review_fraction"].iloc[-1] == 0 and curve["n_accepted"].iloc[-1] == 24
    at = curve[curve["threshold"] >= r["threshold"] - 1e-6]
    if len(at):
        assert at["n_accepted"].iloc[-1] == (~flag).sum()
    assert (tmp_path / "rep" / "review_curve.png").stat().st_size > 1000
    assert "review_curve" not in m
    assert set(r["excess"]) == {"ratio", "p_value", "harder"}
    # the stain / size check, as predict makes it
    assert m["unlike_training"]["n_scored"] == 24
    assert m["unlike_training"]["n"] == pred["unlike_training"].astype(bool).sum()

    # only two classes in the data: --classes-present-only predicts only those two
    two = [r for r in test_rows if r[1] in ("lymphocyte", "neutrophil")]
    man2 = _manifest(tmp_path / "two.csv", two)
    rc = main(["evaluate", str(model), str(man2), "--json", "--classes-present-only", "-q",
               "--out", str(tmp_path / "rep2")])
    m2 = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(m2["labels"]) == {"lymphocyte", "neutrophil"}
    assert m2["classes_present_only"] and m2["n"] == 6
    # the table's predictions are the restricted ones the metrics were computed from
    pred2 = pd.read_csv(tmp_path / "rep2" / "predictions.csv")
    assert set(pred2["predicted"]) <= {"lymphocyte", "neutrophil"}
    assert m2["accuracy"] == pytest.approx((pred2["predicted"] == pred2["label"]).mean())


def test_bad_model_files_exit_2_without_traceback(tmp_path, capsys):
    from morphocell.datasets import sample_paths

    img = sample_paths()[0]
    missing = tmp_path / "nope.mcm"
    assert main(["predict", str(missing), img, "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and "nope.mcm" in err and "Traceback" not in err
    corrupt = tmp_path / "corrupt.mcm"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    assert main(["evaluate", str(corrupt), img]) == 2
    err = capsys.readouterr().err
    assert "not a morphocell model file" in err and "Traceback" not in err
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    assert main(["predict", str(pkl), img, "--out", str(tmp_path / "p.csv")]) == 2
    assert "pickle/joblib files are refused" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_differential_count_by_hand():
    classes = ["erythroblast", "ig", "lymphocyte", "neutrophil", "platelet"]
    pred = ["neutrophil", "neutrophil", "lymphocyte", "ig", None, "neutrophil",
            "erythroblast", "lymphocyte"]
    pa = [0.1, 0.0, 0.2, 0.9, np.nan, 0.3, 0.8, 0.0]
    d = differential_count(pred, classes, ["ig", "erythroblast"], p_atypical=pa)
    # 7 classified: neutrophil 3/7 = 42.857%, lymphocyte 2/7 = 28.571%, ig and erythroblast
    # 1/7 = 14.286% each, platelet 0
    assert d["n_images"] == 8 and d["n_classified"] == 7 and d["n_failed"] == 1
    assert d["counts"] == {"erythroblast": 1, "ig": 1, "lymphocyte": 2, "neutrophil": 3,
                           "platelet": 0}
    assert d["percent"] == {"erythroblast": 14.29, "ig": 14.29, "lymphocyte": 28.57,
                            "neutrophil": 42.86, "platelet": 0.0}
    assert d["flagged"] == ["ig", "erythroblast"]
    assert d["n_atypical"] == 2 and d["percent_atypical"] == 28.57
    assert d["mean_p_atypical"] == pytest.approx(2.3 / 7, abs=1e-4)
    assert d["n_p_atypical_over_0.5"] == 2
    from morphocell.report import format_differential

    d["needs_review"] = {"by_class": {"ig": 1, "neutrophil": 2}}
    text = format_differential(d).splitlines()
    assert text[1].split() == ["class", "count", "%", "review"]
    assert text[3].split() == ["ig", "1", "14.29", "1", "<-", "flagged", "(atypical)"]
    assert text[-1].endswith("(2 cells, 28.57%; 1 of them not marked for review)")
    none = differential_count([None, None], classes, ["ig"])
    assert none["n_classified"] == 0 and none["percent"]["ig"] == 0.0 and none["flagged"] == []
    with pytest.raises(ValueError, match="not among the classes"):
        differential_count(["monocyte"], classes, [])


def test_atypical_probability_and_metrics_by_hand():
    P = np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    np.testing.assert_allclose(atypical_probability(P, ["ig", "lymph", "erythroblast"],
                                                    ["ig", "erythroblast"]), [0.8, 0.6])
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    m = classification_metrics(y_true, y_pred, classes=["a", "b", "c"])
    # a: P=2/2 R=2/3 F1=0.8; b: P=1/2 R=1/2 F1=0.5; c: P=1/2 R=1 F1=2/3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["most_confused"][0] == {"true": "a", "predicted": "b", "count": 1,
                                     "fraction": 0.3333}


def test_second_training_reuses_cached_features(monkeypatch, tmp_path):
    from morphocell.ensembles import BaseLearner
    from morphocell.features import extractor
    from morphocell.workflow import train_handcrafted

    rows = pbc_subset(2)
    paths, labels = [p for p, _ in rows], [lab for _, lab in rows]
    seen = []
    real = extractor.extract_batch

    def counting(sources, *a, **k):
        seen.append(len(sources))
        return real(sources, *a, **k)

    monkeypatch.setattr(extractor, "extract_batch", counting)
    small = {"estimators": [("rf", BaseLearner("rf", params={"n_estimators": 10}))]}
    kw = dict(cv=2, random_state=0, families=("shape", "color"), cache_dir=tmp_path / "c",
              estimator_params=small, domain_copies=0)
    m1, info1 = train_handcrafted(paths, labels, **kw)
    assert seen == [16] and info1["feature_stats"]["computed"] == 16
    m2, info2 = train_handcrafted(list(reversed(paths)), list(reversed(labels)), **kw)
    assert seen == [16]                       # nothing recomputed
    assert info2["feature_stats"] == {"hits": 16, "computed": 0, "uncached": 0}
    pd.testing.assert_frame_equal(info1["X"].iloc[::-1].reset_index(drop=True), info2["X"])
    assert m1.metadata["data_sha256"] == m2.metadata["data_sha256"]
    # another family set is another cache table: computed again
    train_handcrafted(paths, labels, **{**kw, "families": ("shape",)})
    assert seen == [16, 16]


def test_training_with_domain_copies(tmp_path, capsys):
    from morphocell.ensembles import BaseLearner
    from morphocell.workflow import train_handcrafted

    rows = pbc_subset(4)
    paths, labels = [p for p, _ in rows], [lab for _, lab in rows]
    small = {"estimators": [("rf", BaseLearner("rf", params={"n_estimators": 10}))]}
    kw = dict(cv=2, random_state=0, families=("shape", "color"), cache_dir=tmp_path / "c",
              estimator_params=small)
    m, info = train_handcrafted(paths, labels, domain_copies=0.5, **kw)
    n = len(paths)
    assert 0 < info["n_domain_copies"] <= n // 2  # 2 of 4 per class, minus any that failed
    assert len(info["X"]) == len(info["y"]) == n + info["n_domain_copies"]
    assert m.metadata["n_domain_copies"] == info["n_domain_copies"]
    assert m.metadata["class_counts"] == {c: 4 for c in sorted(set(labels))}
    assert len(list((tmp_path / "c" / "domain_copies").glob("*.jpg"))) == n // 2
    # drawn per class: at most 2 of each class's 4 images
    copies = pd.Series(info["y"][n:]).value_counts()
    assert set(copies.index) <= set(labels) and copies.max() <= 2
    assert m.predict_proba(paths[:2]).shape == (2, 8)
    # the stain / size reference describes the images themselves, not their copies: it is
    # the one fitted on the real rows alone
    from morphocell.novelty import fit_domain_reference

    ref = fit_domain_reference(info["X"].iloc[:n], info["y"][:n])
    assert m.metadata["domain_reference"] == ref
    assert ref != fit_domain_reference(info["X"], info["y"])
    # a fraction too small for one copy per class trains on the images alone
    m0, info0 = train_handcrafted(paths, labels, domain_copies=0.1, **kw)
    assert info0["n_domain_copies"] == 0 and len(info0["X"]) == n
    with pytest.raises(MorphocellError, match="fraction"):
        train_handcrafted(paths, labels, domain_copies=1.5, **kw)
    rc = main(["train", str(tmp_path / "none.csv"), "--out", str(tmp_path / "m.mcm"),
               "--features", "deep", "--domain-copies", "0.3"])
    assert rc != 0 and "hand-crafted learners" in capsys.readouterr().err


def test_interrupted_extraction_keeps_finished_chunks(monkeypatch, tmp_path):
    from morphocell.batch import FeatureCache
    from morphocell.features import extractor

    paths = [p for p, _ in pbc_subset(1)]            # 8 real images
    real = extractor.extract_batch
    calls = []

    def flaky(sources, *a, **k):
        calls.append(len(sources))
        if len(calls) == 3:
            raise KeyboardInterrupt                   # the user stops the run
        return real(sources, *a, **k)

    monkeypatch.setattr(extractor, "extract_batch", flaky)
    cache = FeatureCache(tmp_path, families=("shape",), write_every=3)
    with pytest.raises(KeyboardInterrupt):
        cache.extract(paths)
    assert calls == [3, 3, 2]
    monkeypatch.setattr(extractor, "extract_batch", real)
    X, st, _ = cache.extract(paths)
    assert cache.last_stats == {"hits": 6, "computed": 2, "uncached": 0}
    assert st == ["ok"] * 8 and X.notna().all().all()
    np.testing.assert_array_equal(X.to_numpy(),
                                  real(paths, ("shape",))[0])


@pytest.mark.parametrize("features", ["deep", "fused"])
def test_train_cli_deep_with_cnn_options(features, tmp_path, capsys):
    """`morphocell train --features deep|fused` end to end, with the CNN crop and augmentation
    options recorded in the model, and `predict` with the domain check (tiny: 3 classes x 6
    images, 2 folds, 1 epoch)."""
    pytest.importorskip("tensorflow")
    from morphocell.model_io import load_model

    rows = [r for r in pbc_subset(6) if r[1] in ("lymphocyte", "neutrophil", "platelet")]
    man = _manifest(tmp_path / "train.csv", rows)
    model = tmp_path / "deep.mcm"
    cache = str(tmp_path / "cache")
    rc = main(["train", str(man), "--out", str(model), "--features", features, "--cv", "2",
               "--epochs", "1", "--cnn-crop", "0.8", "--cnn-augment", "stain", "-q",
               "--cache-dir", cache])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = load_model(model)
    assert m.metadata["cnn_crop"] == 0.8 and m.metadata["cnn_augment"] == "stain"
    if features == "fused":  # domain copies by default (0.35): round(0.35 x 6) = 2 images
        # per class copied; the copies train the hand-crafted learners, the meta-learner is
        # fitted on the 18 images only
        assert m.metadata["domain_copies"] == 0.35 and m.metadata["n_domain_copies"] == 6
        assert m.estimator.n_domain_copies_ == 6
        assert len(list((tmp_path / "cache" / "domain_copies").glob("*.jpg"))) == 6
        assert "also trained on 6 domain-randomised copies" in out
    else:  # a deep model has no hand-crafted learner to train on copies
        assert m.metadata["domain_copies"] == 0 and m.metadata["n_domain_copies"] == 0
    assert m.metadata["n_used"] == 18 and m.classes == ["lymphocyte", "neutrophil", "platelet"]
    deep = getattr(m.estimator, "deep_", m.estimator)
    assert all(e.augment == "stain" for e in deep.embedders_)
    # a stain / size reference like the hand-crafted models', from the training cells
    ref = m.metadata["domain_reference"]
    assert ref["classes"] == m.classes and np.isfinite(ref["threshold"])
    # a review threshold from the out-of-fold probabilities of the 18 images (deep: the SVC on
    # embeddings; fused: the stack, whose copy rows have none)
    assert m.metadata["review"]["n"] == 18
    # predict: the hand-crafted features come from the cache filled by training
    test = [p for p, _ in pbc_subset(1, split="test")][:3] + [str(tmp_path / "missing.jpg")]
    rc = main(["predict", str(model), *test, "--out", str(tmp_path / "p.csv"),
               "--cache-dir", cache])
    out, err = capsys.readouterr()
    assert rc == 3 and "missing.jpg" in err
    df = pd.read_csv(tmp_path / "p.csv")
    assert list(df["status"]) == ["ok", "ok", "ok", "error"]
    assert df.loc[:2, ["p_lymphocyte", "p_neutrophil", "p_platelet"]].notna().all().all()
    assert df["domain_score"][:3].notna().all() and np.isnan(df["domain_score"][3])
    assert "needs_review" in df.columns and not df["needs_review"][3]
    assert "unlike the training images" in out + err
    # the same probabilities as the estimator's own feature extraction (the CSV keeps 6
    # decimals)
    np.testing.assert_allclose(df.loc[:2, ["p_lymphocyte", "p_neutrophil", "p_platelet"]],
                               m.predict_proba(test[:3]), rtol=0, atol=1e-6)
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit status 2
        main(["train", str(man), "--out", str(model), "--features", "deep",
              "--cnn-augment", "strong"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_review_threshold_against_brute_force():
    from morphocell.report import review_threshold

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    for trial in range(20):
        n = int(rng.integers(5, 60))
        logits = rng.normal(size=(n, 3)) * rng.uniform(0.5, 4)
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        if trial % 3 == 0:
            p = np.round(p, 1)                     # ties in confidence
            p /= p.sum(axis=1, keepdims=True)
        y = np.asarray(classes)[np.where(rng.random(n) < 0.8, p.argmax(1), rng.integers(0, 3, n))]
        target = float(rng.choice([0.8, 0.9, 0.95, 1.0]))
        r = review_threshold(p, y, classes, target)
        conf, right = p.max(1), np.asarray(classes)[p.argmax(1)] == y
        # brute force: every candidate threshold (each confidence, and 0); the lowest whose
        # accepted cells reach the target wins
        ok = [t for t in sorted(set(conf)) if right[conf >= t].mean() >= target]
        if right.mean() >= target:
            assert r["threshold"] == 0.0 and r["review_fraction"] == 0.0
        elif ok:
            t = min(ok)
            assert r["threshold"] == t
            assert r["review_fraction"] == pytest.approx((conf < t).mean())
            assert r["accepted_accuracy"] == pytest.approx(right[conf >= t].mean())
        else:
            assert r["threshold"] > 1 and r["review_fraction"] == 1.0
    # NaN rows (failed images, rows that did not train the meta-learner) are left out
    p = np.array([[0.9, 0.1], [np.nan, np.nan], [0.6, 0.4]])
    r = review_threshold(p, ["a", "b", "b"], ["a", "b"], 1.0)
    assert r["n"] == 2 and r["threshold"] == 0.9 and r["review_fraction"] == 0.5
    with pytest.raises(ValueError, match="target_accuracy"):
        review_threshold(p, ["a", "b", "b"], ["a", "b"], 0.0)


def test_report_doctests():
    import doctest

    from morphocell import report

    res = doctest.testmod(report)
    assert res.attempted >= 8 and res.failed == 0


def test_review_excess_against_the_binomial_tail():
    from scipy.stats import binom

    from morphocell.report import REVIEW_EXCESS_P, REVIEW_EXCESS_RATIO, review_excess

    for k, n, e in [(11, 40, 0.081), (4, 40, 0.081), (7, 40, 0.081), (300, 2000, 0.081),
                    (170, 2000, 0.081), (0, 10, 0.2), (10, 10, 0.2)]:
        r = review_excess(k, n, e)
        p = sum(binom.pmf(j, n, e) for j in range(k, n + 1))     # P(X >= k), term by term
        assert r["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-300)
        assert r["ratio"] == pytest.approx(k / n / e)
        assert r["harder"] == (k / n >= REVIEW_EXCESS_RATIO * e and p < REVIEW_EXCESS_P)
    # a small excess in a large batch is significant but not large: not called harder
    assert not review_excess(200, 2000, 0.081)["harder"]
    assert review_excess(0, 0, 0.08)["harder"] is False
    assert review_excess(5, 10, 0.0)["p_value"] is None



def test_bad_review_accuracy_is_refused_before_any_work(tmp_path, capsys):
    from morphocell.datasets import sample_folder

    rc = main(["train", str(sample_folder()), "--out", str(tmp_path / "m.mcm"),
               "--review-accuracy", "1.5", "--cache-dir", str(tmp_path / "c"), "-q"])
    assert rc == 2 and "(0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "m.mcm").exists()
