"""Train the ``default`` model shipped in ``morphocell/models/default.mcm``.

Usage (from the repository root; a few minutes on 2 idle cores, ``--stack`` about 6 times
longer)::

    nice -n 10 python benchmarks/train_default.py --data ../shared/data \\
        --out morphocell/models/default.mcm [--work /tmp/lt] [--n-jobs 2] [--random-state 0]

Training data, every labelled image of ``DATA`` (``benchmarks/lab_transfer.py``'s labs, the
features computed once and cached as Parquet in ``--work``):

* PBC, the ``train`` rows of ``pbc_split.csv`` (the ``test`` rows are scored below, never
  trained on);
* segwbc dataset1 (300 cells) and dataset2 (40 cells);
* BCCD, the white cells that the ``morphocell crop`` detector finds in the 175
  even-numbered labelled fields, at the field's own scale, labelled with the field's label.

Each lab is a domain of a :class:`morphocell.adapt.LabAdaptiveClassifier` (per-lab
class-balanced standardisation) over the project's calibrated SVC, or with ``--stack`` a
:class:`~morphocell.ensembles.stacking.StackedCellClassifier` of :data:`ESTIMATORS`
(size-bounded: see ``morphocell/models/README.md``). The script then
scores the PBC ``test`` rows (8 classes, as one batch, as ``morphocell evaluate`` does) and
prints the model file's size.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: Base learners of the stack that ``--stack`` trains instead of the single SVC, sized for a
#: file within 20 MB: no random forest (100 trees of leaves >= 3 cells alone take 11.5 MB),
#: the SVC (about 11 MB of support vectors), XGBoost with 150 rounds at learning rate 0.2
#: (about 25 kB per round of 8 trees).
ESTIMATORS = (("svc", None), ("xgb", {"n_estimators": 150, "learning_rate": 0.2}))


def build_estimator(random_state: int, n_jobs: int, stack: bool = False):
    """The classifier of the standardised features: the project's calibrated SVC
    (:class:`~morphocell.ensembles.stacking.BaseLearner` ``"svc"``), or with ``stack`` a
    :class:`~morphocell.ensembles.stacking.StackedCellClassifier` of :data:`ESTIMATORS`."""
    from morphocell.ensembles.stacking import BaseLearner, StackedCellClassifier

    if not stack:
        return BaseLearner("svc", random_state=random_state)
    return StackedCellClassifier(
        estimators=[(k, BaseLearner(k, params=p)) for k, p in ESTIMATORS],
        random_state=random_state, n_jobs=n_jobs)


def training_table(data: Path, work: Path, verbose: int = 1):
    """``(train, pbc_test)`` DataFrames of the labs (``domain`` column added)."""
    import lab_transfer as lt
    import pandas as pd

    labs = lt.load_labs(data, work, verbose=verbose)
    parts = []
    for lab, df in labs.items():
        d = df[df["status"] == "ok"]
        if lab == "pbc":
            d = d[d["split"] == "train"]
        parts.append(d.assign(domain=lab))
    test = labs["pbc"]
    test = test[(test["split"] == "test") & (test["status"] == "ok")]
    return pd.concat(parts, ignore_index=True), test.reset_index(drop=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("MORPHOCELL_DATA", "../shared/data")))
    ap.add_argument("--out", type=Path, default=REPO / "morphocell" / "models" / "default.mcm")
    ap.add_argument("--work", type=Path, default=Path("build/default_model"))
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--random-state", type=int, default=0)
    ap.add_argument("--stack", action="store_true",
                    help="an SVC + XGBoost stack instead of the single SVC (6x the fits)")
    a = ap.parse_args(argv)

    from morphocell.adapt import train_multilab
    from morphocell.features.extractor import feature_names
    from morphocell.model_io import load_model, save_model
    from morphocell.report import classification_metrics
    from morphocell.train import _data_sha256

    t0 = time.perf_counter()
    train, test = training_table(a.data, a.work)
    names = feature_names(None)
    print(f"training on {len(train)} cells: "
          + json.dumps(train.groupby("domain").size().to_dict()), flush=True)
    digest = _data_sha256(train["path"].tolist(), train["label"].tolist())
    model = train_multilab(train[names], train["label"].to_numpy(str),
                           train["domain"].to_numpy(str),
                           estimator=build_estimator(a.random_state, a.n_jobs, a.stack),
                           random_state=a.random_state, data_sha256=digest,
                           extra_metadata={
                               "data": "PBC train rows, segwbc dataset1 + dataset2, BCCD "
                                       "even-field crops (benchmarks/train_default.py)",
                               "classifier_of_z": ("stack " + json.dumps(ESTIMATORS)
                                                   if a.stack else "BaseLearner('svc')")})
    fit_s = time.perf_counter() - t0
    print(f"fitted in {fit_s / 60:.1f} min; CV: {json.dumps(model.metadata['cv_scores'])}",
          flush=True)
    # the PBC test rows standardised with the PBC training lab's own statistics, for reference
    lac = model.estimator[-1]
    k = lac.domains_.index("pbc")
    p_lab = lac._combine(lac.standardize(test[names], lac.domain_loc_[k],
                                         lac.domain_scale_[k]))
    acc_lab = float((np.asarray(model.classes)[p_lab.argmax(axis=1)]
                     == test["label"].to_numpy(str)).mean())
    print(f"PBC test with the PBC lab's statistics: accuracy {acc_lab:.4f}", flush=True)
    clf = model.estimator[1:]
    proba = clf.predict_proba(test[names])
    pred = np.asarray(model.classes)[proba.argmax(axis=1)]
    m = classification_metrics(test["label"].to_numpy(str), pred, proba, model.classes)
    model.metadata["pbc_test"] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                  "n": m["n"], "accuracy_pbc_statistics": acc_lab}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, a.out)
    size = a.out.stat().st_size
    back = load_model(a.out)
    assert back.classes == model.classes
    print(f"PBC test ({m['n']} cells, 8 classes): accuracy {m['accuracy']:.4f}, macro-F1 "
          f"{m['macro_f1']:.4f}")
    print(f"model written to {a.out}: {size / 1e6:.1f} MB; total {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
