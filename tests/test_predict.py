"""morphocell.predict (predict, evaluate) as library functions, and the report they build on:
differential counts as hematology reports them, metrics, the review threshold."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import pbc_subset

from morphocell.errors import DataError
from morphocell.report import (
    atypical_probability,
    classification_metrics,
    differential_count,
    format_differential,
    format_metrics,
)


@pytest.fixture(scope="module")
def small_model(data_dir, tmp_path_factory):
    """A small stack (one 10-tree forest, shape + colour features) on 4 images per class."""
    from morphocell.ensembles import BaseLearner
    from morphocell.train import train

    tmp = tmp_path_factory.mktemp("model")
    rows = pbc_subset(4)
    res = train([p for p, _ in rows], [lab for _, lab in rows], cv=2,
                families=("shape", "color"), domain_copies=0, cache_dir=tmp / "c",
                estimator_params={"estimators": [("rf", BaseLearner(
                    "rf", params={"n_estimators": 10}))]})
    res.save(tmp / "m.mcm", explain=False)
    return res.model, tmp / "m.mcm"


def test_predict_returns_the_table_the_count_and_the_failures(small_model, tmp_path, capsys):
    import morphocell

    model, path = small_model
    test = [p for p, _ in pbc_subset(2, split="test")]
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 235, np.uint8)).save(blank)
    res = morphocell.predict(model, [*test, str(blank), str(tmp_path / "gone.jpg")])
    assert capsys.readouterr() == ("", "")          # a library function prints nothing
    df = res.predictions
    classes = model.classes
    assert list(df.columns) == (["path", "predicted"] + [f"p_{c}" for c in classes]
                                + ["p_atypical", "domain_score", "unlike_training",
                                   "needs_review", "status", "error"])
    assert list(df["status"]) == ["ok"] * 16 + ["no_cell", "error"]
    assert [f[0] for f in res.failures] == [str(blank), str(tmp_path / "gone.jpg")]
    assert res.n_classified == 16 and res.differential["n_failed"] == 2
    ok = df[df["status"] == "ok"]
    vc = ok["predicted"].value_counts()
    assert res.differential["counts"] == {c: int(vc.get(c, 0)) for c in classes}
    assert res.differential["needs_review"]["n"] == int(ok["needs_review"].sum())
    assert set(res.flags) == {"review_harder", "mostly_unlike", "unlike_share"}
    assert res.flags["unlike_share"] == pytest.approx(ok["unlike_training"].mean())
    # from a model file too; save writes the CSV and the JSON of the differential
    res2 = morphocell.predict(path, test)
    np.testing.assert_array_equal(res2.proba, res.proba[:16])
    csv, js = res2.save(tmp_path / "p.csv")
    assert js == tmp_path / "p_differential.json"
    assert json.loads(js.read_text()) == json.loads(json.dumps(res2.differential))
    assert len(pd.read_csv(csv)) == 16


def test_predict_refuses_unknown_atypical_classes_in_plain_words(small_model):
    from morphocell.predict import predict

    with pytest.raises(DataError) as e:
        predict(small_model[0], [], atypical=["blast"])
    msg = str(e.value)
    assert "unknown atypical class blast;" in msg and "np.str_" not in msg
    assert "basophil, eosinophil" in msg
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        predict(small_model[0], [], review_threshold=2.0)


def test_nothing_classified_is_visible_in_the_result(small_model, tmp_path):
    from morphocell.predict import predict

    res = predict(small_model[0], [str(tmp_path / "cellz")])   # a mistyped folder
    assert res.n_classified == 0 and res.failures[0][1] == "error"
    assert "file not found" in res.failures[0][2]


def test_evaluate_metrics_match_the_table_without_warnings(small_model, tmp_path):
    from morphocell.predict import evaluate

    model, _ = small_model
    rows = [r for r in pbc_subset(3, split="test") if r[1] in ("lymphocyte", "neutrophil")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no scikit-learn UserWarning
        res = evaluate(model, [p for p, _ in rows], [lab for _, lab in rows])
    m, df = res.metrics, res.predictions
    assert m["n"] == m["n_images"] == 6 and res.failures == []
    assert m["accuracy"] == pytest.approx((df["predicted"] == df["label"]).mean())
    assert set(res.review_curve.columns) == {"threshold", "n_accepted", "review_fraction",
                                             "accepted_accuracy"}
    written = res.save(tmp_path / "rep")
    assert {p.name for p in written} >= {"metrics.json", "predictions.csv", "per_class.csv",
                                         "review_curve.png"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        res.save(tmp_path / "file")
    # restricted to the classes present: the predictions use only those
    res2 = evaluate(model, [p for p, _ in rows], [lab for _, lab in rows],
                    classes_present_only=True)
    assert set(res2.predictions["predicted"]) <= {"lymphocyte", "neutrophil"}
    with pytest.raises(DataError, match="no class of the model"):
        evaluate(model, [rows[0][0]], ["blast"], classes_present_only=True)


# -- report -----------------------------------------------------------------------------------
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
    # the WBC differential: 6 leukocytes (ig 1, lymphocyte 2, neutrophil 3), per 100 WBC;
    # 1 erythroblast per 6 WBC = 16.67 NRBC / 100 WBC; platelets apart
    assert d["wbc"] == {"classes": ["ig", "lymphocyte", "neutrophil"], "n": 6,
                        "counts": {"ig": 1, "lymphocyte": 2, "neutrophil": 3},
                        "percent": {"ig": 16.67, "lymphocyte": 33.33, "neutrophil": 50.0}}
    assert d["n_nrbc"] == 1 and d["nrbc_per_100_wbc"] == 16.67 and d["n_platelets"] == 0
    d["needs_review"] = {"by_class": {"ig": 1, "neutrophil": 2}}
    text = format_differential(d).splitlines()
    assert text[1].startswith("  WBC differential (6 leukocytes")
    assert text[2].split() == ["class", "count", "%", "WBC", "review"]
    assert text[3].split() == ["immature", "granulocytes", "(ig)", "1", "16.67", "1", "<-",
                               "flagged", "(atypical)"]
    assert "nucleated red cells (erythroblast): 1, 16.67 per 100 WBC" in text[6]
    assert text[7].startswith("  platelets (platelet): 0, counted apart")
    assert text[-1].endswith("(2 cells, 28.57% of the classified cells; 1 of them not marked "
                             "for review)")
    none = differential_count([None, None], classes, ["ig"])
    assert none["n_classified"] == 0 and none["percent"]["ig"] == 0.0 and none["flagged"] == []
    assert none["nrbc_per_100_wbc"] is None
    assert "no atypical class present" not in format_differential(none)
    with pytest.raises(ValueError, match="not among the classes"):
        differential_count(["monocyte"], classes, [])


def test_metrics_table_spells_out_and_does_not_truncate_class_names():
    long = "promyelocyte_with_granules"
    m = classification_metrics(["ig", long, long], ["ig", long, "ig"], classes=["ig", long])
    text = format_metrics(m)
    assert long in text and "immature granulocytes (ig)" in text
    header, row = text.splitlines()[1], text.splitlines()[2]
    assert header.index("precision") > len("  " + long)
    assert row.split()[-1] == "1" and "immature granulocytes (ig)" in row


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


def test_balanced_accuracy_equals_scikit_learn_without_its_warning():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true = rng.choice(["a", "b", "c"], size=30)
        y_pred = rng.choice(["a", "b", "c", "d"], size=30)     # "d" never true
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = classification_metrics(y_true, y_pred)["balanced_accuracy"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = balanced_accuracy_score(y_true, y_pred)
        assert got == want


def test_review_curve_plot_shows_its_threshold_inside_the_axis(monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from morphocell.report import plot_review_curve, review_curve

    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    # the best accuracy is reached early (2% reviewed), the threshold far later (60%)
    conf = np.linspace(1, 0.01, 100)
    right = np.ones(100, bool)
    right[2:] = np.arange(98) % 2 == 0
    curve = review_curve(conf, right)
    plot_review_curve(curve, tmp_path / "c.png", threshold=float(conf[59]))
    ax = figs[0].axes[0]
    (x,), _ = ax.lines[1].get_data()
    assert ax.get_xlim()[0] <= x <= ax.get_xlim()[1] and x == pytest.approx(40.0)
    assert (tmp_path / "c.png").stat().st_size > 1000


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
    assert res.attempted >= 10 and res.failed == 0


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


def test_an_image_listed_twice_is_counted_once(small_model, tmp_path):
    import shutil

    from morphocell.predict import evaluate, predict

    model, _ = small_model
    rows = pbc_subset(2, split="test")
    paths = [p for p, _ in rows]
    renamed = tmp_path / "renamed.jpg"
    shutil.copy(paths[0], renamed)
    listed = [*paths, paths[3], str(renamed)]
    res = predict(model, listed)
    assert len(res.predictions) == 18                   # a row per listed file ...
    assert res.differential["n_classified"] == 16       # ... each image counted once
    once = predict(model, paths).differential
    assert res.differential["counts"] == once["counts"]
    assert res.differential["duplicates"] == {"n": 2, "files": [[paths[0], str(renamed)],
                                                                 [paths[3], paths[3]]]}
    assert "duplicates" not in once
    labels = [lab for _, lab in rows]
    ev = evaluate(model, listed, [*labels, labels[3], labels[0]])
    assert ev.metrics["n"] == 16 and ev.metrics["duplicates"]["n"] == 2
    assert ev.metrics["accuracy"] == evaluate(model, paths, labels).metrics["accuracy"]
    with pytest.raises(DataError, match="two labels"):
        evaluate(model, [paths[0], str(renamed)], ["basophil", "monocyte"])


def test_report_files_escape_formula_like_class_names(tmp_path):
    """A class named like a spreadsheet formula is written as text in every report CSV
    (confusion_matrix.csv included: its row labels are class names)."""
    from morphocell.predict import EvaluationResult
    from morphocell.report import classification_metrics, review_curve

    bad = "=SUM(1+1)*cmd|calc!A0"
    y = [bad, "b", "b", bad]
    pred = [bad, "b", bad, bad]
    m = classification_metrics(y, pred, classes=[bad, "b"])
    table = pd.DataFrame({"path": ["a.png", "b.png", "c.png", "d.png"], "label": y,
                          "predicted": pred})
    curve = review_curve(np.array([0.9, 0.8, 0.7, 0.6]), np.array(y) == np.array(pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # matplotlib: a long tick label
        written = EvaluationResult(m, table, curve).save(tmp_path / "report")
    for path in written:
        if path.suffix == ".csv" and path.name != "review_curve.csv":  # numbers only
            text = path.read_text()
            assert "'" + bad in text, path.name
            assert not any(cell.startswith("=") for line in text.splitlines()
                           for cell in line.split(",")), path.name
    cm = pd.read_csv(tmp_path / "report" / "confusion_matrix.csv", index_col=0)
    assert list(cm.index) == ["'" + bad, "b"] and cm.to_numpy().tolist() == [[2, 0], [1, 1]]
