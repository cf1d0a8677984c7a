"""morphocell.train.train as a library function, on real PBC images."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import pbc_subset

from morphocell.errors import DataError, MorphocellError


def _small():
    from morphocell.ensembles import BaseLearner

    return {"estimators": [("rf", BaseLearner("rf", params={"n_estimators": 10}))]}


def test_train_returns_a_result_and_prints_nothing(data_dir, tmp_path, capsys):
    import morphocell
    from morphocell.train import TrainResult

    rows = pbc_subset(3)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths = [p for p, _ in rows] + [str(bad)]
    labels = [lab for _, lab in rows] + ["ig"]
    res = morphocell.train(paths, labels, cv=2, families=("shape", "color"),
                           estimator_params=_small(), domain_copies=0,
                           cache_dir=tmp_path / "c")
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert isinstance(res, TrainResult)
    assert res.failures == [(str(bad), "error", res.failures[0][2])]
    assert "corrupt.jpg" in res.failures[0][2] and res.n_failed == 1
    assert res.estimator is res.model.estimator and res.metadata is res.model.metadata
    assert set(res.cv_scores) == {"rf", "stack"}
    meta = res.metadata
    assert meta["features"] == "handcrafted" and meta["families"] == ["shape", "color"]
    assert meta["n_images"] == 25 and meta["n_used"] == 24 and meta["n_failed"] == 1
    assert meta["class_counts"] == {c: 3 for c in sorted(set(labels[:24]))}
    assert meta["review"]["n"] == 24 and meta["domain_reference"]["classes"] == res.model.classes
    # the fitted pipeline predicts from files, the same classes as the metadata
    P = res.model.predict_proba(paths[:2])
    assert P.shape == (2, 8) and np.allclose(P.sum(axis=1), 1)
    # save writes the model and its explanation folder beside it
    written = res.save(tmp_path / "m.mcm")
    assert written[0] == tmp_path / "m.mcm" and (tmp_path / "m_explain" / "training.json") in written
    from morphocell.model_io import load_model

    assert load_model(tmp_path / "m.mcm").metadata["data_sha256"] == meta["data_sha256"]


def test_the_same_seed_gives_the_same_model(data_dir, tmp_path):
    from morphocell.train import train

    rows = pbc_subset(3)
    paths, labels = [p for p, _ in rows], [lab for _, lab in rows]
    kw = {"cv": 2, "families": ("shape", "color"), "estimator_params": _small(),
          "cache_dir": tmp_path / "c", "domain_copies": 0.5}
    a, b = train(paths, labels, **kw), train(paths, labels, **kw)
    np.testing.assert_array_equal(a.model.predict_proba(paths[:4]),
                                  b.model.predict_proba(paths[:4]))
    assert a.metadata["cv_scores"] == b.metadata["cv_scores"]


def test_options_are_checked_before_any_work(tmp_path):
    from morphocell.train import DEFAULT_DOMAIN_COPIES, check_options, train

    assert check_options("handcrafted") == DEFAULT_DOMAIN_COPIES == check_options("fused")
    assert check_options("deep") == 0.0
    for kw, needle in [({"features": "deep", "domain_copies": 0.3}, "hand-crafted learners"),
                       ({"domain_copies": 1.5}, "fraction"),
                       ({"review_accuracy": 0.0}, "(0, 1]"),
                       ({"features": "cnn"}, "handcrafted, deep, fused")]:
        with pytest.raises(DataError, match=needle.replace("(", r"\(").replace("]", r"\]")):
            check_options(**kw)
        # train refuses them before reading a single (here: missing) image
        with pytest.raises(DataError):
            train([str(tmp_path / "gone.jpg")] * 4, ["a", "a", "b", "b"],
                  cache_dir=tmp_path / "c", **kw)
    assert not (tmp_path / "c").exists()


def test_class_counts_in_messages_are_plural_and_plain(data_dir, tmp_path):
    from morphocell.train import train

    rows = [r for r in pbc_subset(3) if r[1] == "monocyte"]
    with pytest.raises(DataError) as e:
        train([p for p, _ in rows], [lab for _, lab in rows], families=("shape",),
              domain_copies=0)
    msg = str(e.value)
    assert "got 1 class (monocyte)" in msg and "np.str_" not in msg and "1 classes" not in msg
    two = pbc_subset(2)
    rows = [r for r in two if r[1] == "basophil"] + [r for r in two if r[1] == "eosinophil"][:1]
    with pytest.raises(DataError, match="too few for") as e:
        train([p for p, _ in rows], [lab for _, lab in rows], families=("shape",),
              domain_copies=0)
    assert "np.str_" not in str(e.value) and "[" not in str(e.value)


def test_second_training_reuses_cached_features(data_dir, monkeypatch, tmp_path):
    from morphocell.features import extractor
    from morphocell.train import train

    rows = pbc_subset(2)
    paths, labels = [p for p, _ in rows], [lab for _, lab in rows]
    seen = []
    real = extractor.extract_batch

    def counting(sources, *a, **k):
        seen.append(len(sources))
        return real(sources, *a, **k)

    monkeypatch.setattr(extractor, "extract_batch", counting)
    kw = {"cv": 2, "random_state": 0, "families": ("shape", "color"),
          "cache_dir": tmp_path / "c", "estimator_params": _small(), "domain_copies": 0}
    r1 = train(paths, labels, **kw)
    assert seen == [16] and r1.feature_stats["computed"] == 16
    r2 = train(list(reversed(paths)), list(reversed(labels)), **kw)
    assert seen == [16]                       # nothing recomputed
    assert r2.feature_stats == {"hits": 16, "computed": 0, "uncached": 0}
    pd.testing.assert_frame_equal(r1.X.iloc[::-1].reset_index(drop=True), r2.X)
    assert r1.metadata["data_sha256"] == r2.metadata["data_sha256"]
    # another family set is another cache table: computed again
    train(paths, labels, **{**kw, "families": ("shape",)})
    assert seen == [16, 16]


def test_training_with_domain_copies(data_dir, tmp_path):
    from morphocell.novelty import fit_novelty_reference
    from morphocell.train import train

    rows = pbc_subset(4)
    paths, labels = [p for p, _ in rows], [lab for _, lab in rows]
    kw = {"cv": 2, "random_state": 0, "families": ("shape", "color"),
          "cache_dir": tmp_path / "c", "estimator_params": _small()}
    res = train(paths, labels, domain_copies=0.5, **kw)
    n = len(paths)
    assert 0 < res.n_domain_copies <= n // 2  # 2 of 4 per class, minus any that failed
    assert len(res.X) == len(res.y) == n + res.n_domain_copies
    assert res.metadata["class_counts"] == {c: 4 for c in sorted(set(labels))}
    assert len(list((tmp_path / "c" / "domain_copies").glob("*.jpg"))) == n // 2
    # drawn per class: at most 2 of each class's 4 images
    copies = pd.Series(res.y[n:]).value_counts()
    assert set(copies.index) <= set(labels) and copies.max() <= 2
    assert res.model.predict_proba(paths[:2]).shape == (2, 8)
    # the stain / size reference describes the images themselves, not their copies
    ref = fit_novelty_reference(res.X.iloc[:n], res.y[:n])
    assert res.metadata["domain_reference"] == ref
    assert ref != fit_novelty_reference(res.X, res.y)
    # a fraction too small for one copy per class trains on the images alone
    r0 = train(paths, labels, domain_copies=0.1, **kw)
    assert r0.n_domain_copies == 0 and len(r0.X) == n
    with pytest.raises(MorphocellError, match="fraction"):
        train(paths, labels, domain_copies=1.5, **kw)


def test_identical_images_share_a_fold_and_conflicting_labels_are_refused(data_dir, tmp_path):
    import shutil

    from morphocell.train import train

    rows = pbc_subset(3)
    paths, labels = [p for p, _ in rows], [lab for _, lab in rows]
    renamed = tmp_path / "renamed.jpg"
    shutil.copy(paths[0], renamed)
    # the first image again under another name, the second listed twice
    paths2 = [*paths, str(renamed), paths[1]]
    labels2 = [*labels, labels[0], labels[1]]
    res = train(paths2, labels2, cv=3, families=("shape", "color"), domain_copies=0,
                estimator_params=_small(), cache_dir=tmp_path / "c")
    assert res.duplicates == [[paths[0], str(renamed)], [paths[1], paths[1]]]
    assert res.metadata["n_duplicates"] == 2 and res.metadata["n_used"] == 26
    # each copy in its image's fold: the out-of-fold probabilities of the two are one model's
    oof = res.estimator.steps[-1][1].oof_proba_
    np.testing.assert_array_equal(oof[0], oof[24])
    np.testing.assert_array_equal(oof[1], oof[25])
    # the same content with another label: refused, naming both files
    bad = [*labels, "monocyte" if labels[0] != "monocyte" else "basophil"]
    with pytest.raises(DataError, match="the same image has two labels") as e:
        train([*paths, str(renamed)], bad, cv=2, families=("shape",), domain_copies=0)
    assert paths[0] in str(e.value) and str(renamed) in str(e.value)


def test_train_and_predict_are_reachable_as_package_functions():
    """``morphocell.train`` / ``morphocell.predict`` are also module names: whichever Python
    binds to the package attribute, calling it runs the function."""
    import importlib

    import morphocell

    for name in ("train", "predict", "evaluate"):
        assert callable(getattr(morphocell, name)), name
    mod = importlib.import_module("morphocell.train")
    assert mod.TrainResult is morphocell.TrainResult
    with pytest.raises(DataError, match="features must be one of"):
        mod([], [], features="cnn")                   # the module called: the function runs
    with pytest.raises(DataError, match="unknown atypical class"):
        importlib.import_module("morphocell.predict")(
            importlib.import_module("morphocell.model_io").load_model("default"), [],
            atypical=["nope"])


# -- several labs -----------------------------------------------------------------------------
_FOUR = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")


def _two_labs(n: int = 6) -> list[tuple[str, str, str]]:
    """``(path, label, lab)``: ``n`` PBC train cells of each of four classes (lab "pbc") and
    ``n`` segwbc dataset1 cells of the same classes (lab "jiangxi")."""
    import csv

    from conftest import DATA

    rows = [(p, lab, "pbc") for p, lab in pbc_subset(n) if lab in _FOUR]
    folder = DATA / "segwbc" / "dataset1"
    seen: dict[str, int] = {}
    with open(folder / "labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            lab = r["label"].strip()
            if lab in _FOUR and seen.get(lab, 0) < n:
                seen[lab] = seen.get(lab, 0) + 1
                rows.append((str(folder / f"{r['image_id']}_image.png"), lab, "jiangxi"))
    return rows


def _write_manifest(path, rows, domain=True):
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"] + (["domain"] if domain else []))
        w.writerows([r if domain else r[:2] for r in rows])
    return path


def test_training_on_two_labs_from_a_manifest_domain_column(data_dir, tmp_path):
    from morphocell.model_io import load_model
    from morphocell.train import load_labs, train

    rows = _two_labs()
    manifest = _write_manifest(tmp_path / "labs.csv", rows)
    paths, labels, domains = load_labs(manifest)
    assert domains == [r[2] for r in rows] and labels == [r[1] for r in rows]
    # without the column: one lab, no domains
    assert load_labs(_write_manifest(tmp_path / "one.csv", rows, domain=False))[2] is None
    res = train(paths, labels, domains=domains, cv=2, families=("shape", "color"),
                estimator_params=_small(), cache_dir=tmp_path / "c")
    meta = res.metadata
    assert meta["domains"] == {lab: {c: 6 for c in _FOUR} for lab in ("jiangxi", "pbc")}
    assert meta["n_used"] == len(paths) == 48 and meta["n_domain_copies"] == 0
    # each lab scored by a model trained on the other one only, the batch standardised on
    # itself (24 cells >= 20)
    lolo = res.lab_cv
    assert lolo["method"] == "leave-one-lab-out" and set(lolo["labs"]) == {"jiangxi", "pbc"}
    for r in lolo["labs"].values():
        assert r["n"] == 24 and 0 <= r["accuracy"] <= 1 and r["n_unknown_class"] == 0
        assert r["standardised_on"] == "batch"
    assert lolo["mean_accuracy"] == pytest.approx(
        np.mean([r["accuracy"] for r in lolo["labs"].values()]))
    assert set(meta["cv_by_lab"]) == {"jiangxi", "pbc"}
    # the labs are part of the data hash
    other = train(paths, labels, domains=["x"] * len(paths), cv=2, lab_cv=False,
                  families=("shape", "color"), estimator_params=_small(),
                  cache_dir=tmp_path / "c")
    assert other.metadata["data_sha256"] != meta["data_sha256"] and other.lab_cv is None
    # saved, loaded, it predicts cells of either lab
    res.save(tmp_path / "labs.mcm", explain=False)
    back = load_model(tmp_path / "labs.mcm")
    assert set(back.metadata["domains"]) == {"jiangxi", "pbc"}
    assert back.classes == sorted(_FOUR)
    pick = [paths[0], paths[-1]]
    P = back.predict_proba(pick)
    assert P.shape == (2, 4) and np.allclose(P.sum(axis=1), 1)
    np.testing.assert_allclose(P, res.model.predict_proba(pick))


def test_several_labs_bad_input(data_dir, tmp_path):
    from morphocell.train import load_labs, train

    rows = _two_labs(2)
    paths, labels = [r[0] for r in rows], [r[1] for r in rows]
    with pytest.raises(DataError, match="2 domains"):
        train(paths, labels, domains=["a", "b"])
    with pytest.raises(DataError, match="empty domain"):
        train(paths, labels, domains=[""] + ["a"] * (len(paths) - 1))
    with pytest.raises(DataError, match="hand-crafted model"):
        train(paths, labels, domains=["a"] * len(paths), features="deep")
    with pytest.raises(DataError, match="domain copies are not used"):
        train(paths, labels, domains=["a"] * len(paths), domain_copies=0.3)
    bad = [(p, lab, "" if i == 3 else d) for i, (p, lab, d) in enumerate(rows)]
    with pytest.raises(DataError, match="row 5 has no domain"):
        load_labs(_write_manifest(tmp_path / "bad.csv", bad))
    with pytest.raises(DataError, match="needs a 'domain' column"):
        load_labs(_write_manifest(tmp_path / "nodom.csv", rows, domain=False), by_lab=True)
    # by lab: a folder of lab folders; images beside them are refused
    (tmp_path / "labs" / "a" / "neutrophil").mkdir(parents=True)
    (tmp_path / "labs" / "stray.png").write_bytes(b"")
    with pytest.raises(DataError, match="beside the lab folders"):
        load_labs(tmp_path / "labs", by_lab=True)


def test_cli_train_by_lab(data_dir, tmp_path, capsys):
    import os

    from morphocell.cli import main
    from morphocell.model_io import load_model

    rows = _two_labs(5)
    root = tmp_path / "labs"
    for i, (p, lab, dom) in enumerate(rows):
        d = root / dom / lab
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(p, d / f"{i:03d}{os.path.splitext(p)[1]}")
    out = tmp_path / "m.mcm"
    code = main(["train", str(root), "--by-lab", "--out", str(out), "--cv", "2",
                 "--cache-dir", str(tmp_path / "c"), "-q"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "from 2 labs (jiangxi 20, pbc 20)" in text
    assert "leave-one-lab-out" in text and "jiangxi" in text.split("leave-one-lab-out")[1]
    meta = load_model(out).metadata
    assert set(meta["domains"]) == {"jiangxi", "pbc"}
    assert set(meta["lab_cv"]["labs"]) == {"jiangxi", "pbc"}
    # a class folder given to --by-lab (no lab level): a one-line error, exit 2
    code = main(["train", str(root / "pbc"), "--by-lab", "--out", str(tmp_path / "x.mcm"),
                 "--cache-dir", str(tmp_path / "c"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "x.mcm").exists()
    assert "no labels" in err
