import sys, json
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import lab_transfer as LT
from pathlib import Path
from morphocell.ensembles import lab_adaptive as la
import morphocell.ensembles.lab_adaptive as LA
from morphocell.features.extractor import feature_names
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

names = feature_names(None)
labs = LT.load_labs(Path("/work/shared/data"), Path("/tmp/lt"), LT.LABS)
SEED = 0
CS = (0.05, 0.2, 1.0)
KK = 10
LA.MAX_TARGET_WEIGHT = 60.0
def setC(c):
    LA.head_learner = lambda rs=None: make_pipeline(SimpleImputer(strategy="median"),
        LogisticRegression(C=c, max_iter=300, class_weight="balanced"))
def fit(src_df):
    return la.LabAdaptiveClassifier(LT.make_learner("svc", SEED), random_state=SEED).fit(
        src_df[names].to_numpy(float), src_df["label"].to_numpy(str), domains=src_df["domain"].to_numpy())
def evaluate(model, Xt, yt, draws):
    rng = np.random.default_rng(SEED)
    out = {f"k10_C{c}": [] for c in CS}
    for _ in range(draws):
        li = LT.draw_labelled(yt, KK, rng)
        rest = np.setdiff1d(np.arange(len(yt)), li)
        labels = [None] * len(yt)
        for i in li: labels[i] = yt[i]
        for c in CS:
            setC(c)
            m = la.fit_head(model, Xt, labels, random_state=SEED, head_weight=1.0)
            out[f"k10_C{c}"].append(LT.score(yt[rest], m.predict_proba(Xt[rest]), model.classes_)["accuracy"])
    res = {k: float(np.mean(v)) for k, v in out.items()}
    setC(0.05)
    for hw in (0.5, 1.0):
        m = la.fit_head(model, Xt, None, random_state=SEED, head_weight=hw)
        s = LT.score(yt, m.predict_proba(Xt), model.classes_)
        res[f"self_hw{hw}"] = s["accuracy"]; res[f"self_hw{hw}_count"] = s["count_error"]
    return res
res = {}
for held in LT.LABS:
    src, tgt = LT.source_target(labs, held, False, SEED, 300)
    tgt = tgt[tgt["label"].isin(set(src["label"]))].reset_index(drop=True)
    inner = []
    for s in sorted(set(src["domain"])):
        isrc = src[src["domain"] != s]
        itg = LT._per_class(src[(src["domain"] == s) & src["label"].isin(set(isrc["label"]))], 100, SEED).reset_index(drop=True)
        inner.append(evaluate(fit(isrc), itg[names].to_numpy(float), itg["label"].to_numpy(str), 2))
    avg = {k: float(np.mean([d[k] for d in inner])) for k in inner[0]}
    outer = evaluate(fit(src), tgt[names].to_numpy(float), tgt["label"].to_numpy(str), 5)
    bestC = max((k for k in avg if k.startswith("k10")), key=avg.get)
    bestS = max(("self_hw0.5", "self_hw1.0"), key=avg.get)
    res[held] = {"inner": avg, "outer": outer, "chosen": [bestC, bestS],
                 "outer_chosen": [outer[bestC], outer[bestS]]}
    print(held, json.dumps(res[held]), flush=True)
json.dump(res, open("/tmp/lt2/nested2.json", "w"), indent=1)
