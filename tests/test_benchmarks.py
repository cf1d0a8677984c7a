"""benchmarks/run_all.py --quick end to end on real data (a few minutes of wall time at most).

The cross-lab section is skipped here: it is ``benchmarks/cross_lab.py``'s own work, with its
own CLI and cost; ``run_all`` only calls it. The U-Net rows say "not run" (no weights given).
The scripts run from a temporary folder without ``PYTHONPATH``: they import morphocell as the
installed package.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import DATA, REPO


def _env() -> dict:
    """The benchmarks import morphocell as the installed package: no PYTHONPATH, and they run
    from a folder outside the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "MORPHOCELL_DATA": str(DATA)}


PBC_CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte",
               "neutrophil", "platelet"]


def test_benchmarks_import_morphocell_as_installed():
    """No benchmark script puts the repository on ``sys.path``."""
    offenders = [p.name for p in sorted((REPO / "benchmarks").glob("*.py"))
                 if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert offenders == []


def test_run_all_scores_are_the_report_metrics():
    """run_all's accuracy, balanced accuracy, macro-F1 and per-class F1 are
    morphocell.report.classification_metrics' (what ``morphocell evaluate`` reports); an
    unreadable image is counted, not scored, as in ``evaluate``."""
    import importlib.util

    from morphocell.report import classification_metrics

    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    classes = ["lymphocyte", "monocyte", "neutrophil"]
    y = ["neutrophil", "neutrophil", "lymphocyte", "monocyte", "monocyte", "lymphocyte"]
    pred = ["neutrophil", "lymphocyte", "lymphocyte", "monocyte", "neutrophil", run_all.FAILED]
    r = run_all.score(y, pred, classes)
    m = classification_metrics(y[:5], pred[:5], classes=classes)
    assert r["n"] == 6 and r["n_failed"] == 1
    assert (r["accuracy"], r["balanced_accuracy"], r["macro_f1"]) == (
        m["accuracy"], m["balanced_accuracy"], m["macro_f1"]) == (0.6, 2 / 3, m["macro_f1"])
    assert r["per_class_f1"] == {c: m["per_class"][c]["f1"] for c in classes}
    assert r["per_class_f1"]["monocyte"] == 2 / 3  # precision 1, recall 1/2
    assert r["confusion_matrix"] == m["confusion_matrix"]


@pytest.mark.slow
def test_run_all_quick(data_dir, tmp_path):
    out = tmp_path / "results"
    env = _env()
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--data", str(data_dir),
         "--out", str(out), "--quick", "--skip", "crosslab,labtransfer", "--cache-dir",
         str(tmp_path / "cache"), "-v", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Accuracy on the PBC test rows" in proc.stdout

    res = json.loads((out / "results.json").read_text())
    assert res["config"]["quick"] is True
    secs = res["sections"]
    assert set(secs) == {"accuracy", "deep", "plots", "speed", "segmentation"}
    assert all(s["status"] == "ok" and s["wall_s"] >= 0 for s in secs.values()), secs
    assert res["split"]["classes"] == PBC_CLASSES

    methods = res["methods"]
    expected = ["grey_rf", "hc_rf", "hc_svc", "hc_xgb", "hc_stack"]
    deep = secs["deep"]["result"].get("status") != "not installed"
    if deep:
        expected += ["cnn_softmax", "cnn_svc", "fused_stack"]
    for k in expected:
        m = methods[k]
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert 0.0 <= m[metric] <= 1.0, (k, metric, m[metric])
        assert sorted(m["per_class_f1"]) == PBC_CLASSES
        assert all(0.0 <= v <= 1.0 for v in m["per_class_f1"].values())
        assert m["train_s"] > 0 and m["predict_img_per_s"] > 0
        assert m["n"] == res["split"]["n_test"]
    # hand-crafted features beat chance (1/8) clearly even on 10 images per class
    assert methods["hc_stack"]["accuracy"] > 0.4

    speed = secs["speed"]["result"]
    assert speed["morphocell_serial"]["img_per_s_wall"] > 0
    assert "morphocell_n_jobs_2" in speed
    assert speed["files_n_jobs_2"]["same_values_as_serial"]
    assert speed["summary"]["n_jobs_2_files_speedup_wall"] > 0
    seg = secs["segmentation"]["result"]["datasets"]
    for name in ("dataset1", "dataset2"):
        s = seg[name]["otsu"]["summary"]["all"]
        assert 0.0 <= s["cell_dice_mean"] <= 1.0
        u = seg[name]["unet"]
        if deep:  # TensorFlow present: the bundled U-Net weights are evaluated by default
            assert "status" not in u, u
            su = u["summary"]["all"]
            assert 0.0 <= su["nucleus_dice_mean"] <= 1.0 and 0.0 <= su["cell_dice_mean"] <= 1.0
        else:
            assert u["status"] == "not run" and "TensorFlow" in u["reason"]

    md = (out / "results.md").read_text()
    assert "QUICK RUN" in md and "| hand-crafted stack" in md and "## 3. Segmentation" in md
    pngs = {p.name for p in out.glob("*.png")}
    assert {"per_class_f1.png", "feature_importances_top20.png", "embedding_tsne.png",
            "confusion_hc_stack.png", "confusion_grey_rf.png"} <= pngs
    assert all((out / p).stat().st_size > 1000 for p in pngs)
    assert res["top20_importances"]["hc_rf"][0]["feature"].count("_") >= 2
    assert not list(out.glob(".*")), "temporary files left behind"


@pytest.mark.slow
@pytest.mark.deep
def test_deep_compare_quick_with_domain_copies(data_dir, tmp_path):
    """benchmarks/deep_compare.py --quick --domain-copies: every row on the same split, the
    *_copies rows with their copies counted (12 training images per class, half copied)."""
    pytest.importorskip("tensorflow")
    out = tmp_path / "results"
    env = _env()
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "deep_compare.py"), "--data", str(data_dir),
         "--quick", "--domain-copies", "0.5", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "deep_compare_quick.json").read_text())
    assert res["config"]["domain_copies"] == 0.5 and res["config"]["reduced"] is True
    models = res["models"]
    assert set(models) == {"cnn_softmax", "cnn_svc", "naive_final_net_svc", "handcrafted_stack",
                           "fused_stack", "handcrafted_stack_copies", "fused_stack_copies"}
    assert all(0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0
               for m in models.values())
    assert models["handcrafted_stack_copies"]["n_copies"] == 8 * 6
    assert models["fused_stack_copies"]["n_copies"] == 8 * 6
    # hand-crafted features beat chance (1/8) clearly, with or without copies
    assert models["handcrafted_stack_copies"]["accuracy"] > 0.4
    assert "| fused_stack_copies |" in (out / "deep_compare_quick.md").read_text()
    assert not list(out.glob("*_partial.*")), "partial results left behind"
