import sys, json, time
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import lab_transfer as LT
from pathlib import Path
from morphocell.ensembles import lab_adaptive as la
import morphocell.ensembles.lab_adaptive as LA
from morphocell.features.extractor import feature_names

names = feature_names(None)
labs = LT.load_labs(Path("/work/shared/data"), Path("/tmp/lt"), LT.LABS)
SEED = 0
HW = (0.25, 0.5, 0.75, 1.0)
TW = (5.0, 20.0, 60.0)
KK = int(sys.argv[1]) if len(sys.argv) > 1 else 10
DR = 3

def count_errs(y, proba, classes):
    classes = [str(c) for c in classes]
    present = sorted(set(y.tolist()) & set(classes))
    cols = [classes.index(c) for c in present]
    P = proba[:, cols]; P = P / P.sum(1, keepdims=True)
    pred = np.asarray(present)[P.argmax(1)]
    ts = np.array([(y == c).mean() for c in present])
    am = np.array([(pred == c).mean() for c in present])
    sm = P.mean(0)
    return float(np.abs(am - ts).sum() / 2), float(np.abs(sm - ts).sum() / 2)

def fit(src_df):
    Xs, ys, ds = src_df[names].to_numpy(float), src_df["label"].to_numpy(str), src_df["domain"].to_numpy()
    return la.LabAdaptiveClassifier(LT.make_learner("svc", SEED), random_state=SEED).fit(Xs, ys, domains=ds)

def grid_scores(model, Xt, yt, kk, draws):
    """mean acc per (hw, tw) at k=kk."""
    rng = np.random.default_rng(SEED)
    out = {(h, t): [] for h in HW for t in TW}
    for _ in range(draws):
        li = LT.draw_labelled(yt, kk, rng)
        rest = np.setdiff1d(np.arange(len(yt)), li)
        labels = [None] * len(yt)
        for i in li: labels[i] = yt[i]
        for t in TW:
            LA.MAX_TARGET_WEIGHT = t
            m = la.fit_head(model, Xt, labels, random_state=SEED)
            m.head_weight_ = 0.0
            pb = m.predict_proba(Xt[rest])
            m.head_weight_ = 1.0
            ph = m.predict_proba(Xt[rest])
            for h in HW:
                s = LT.score(yt[rest], (1 - h) * pb + h * ph, model.classes_)
                out[(h, t)].append(s["accuracy"])
    LA.MAX_TARGET_WEIGHT = 20.0
    return {k: float(np.mean(v)) for k, v in out.items()}

res = {}
for held in LT.LABS:
    t0 = time.time()
    src, tgt = LT.source_target(labs, held, False, SEED, 300)
    known = set(src["label"])
    tgt = tgt[tgt["label"].isin(known)].reset_index(drop=True)
    Xt, yt = tgt[names].to_numpy(float), tgt["label"].to_numpy(str)
    # inner LOLO over source labs
    inner = {}
    for s in sorted(set(src["domain"])):
        isrc = src[src["domain"] != s]
        itg = src[(src["domain"] == s) & src["label"].isin(set(isrc["label"]))].reset_index(drop=True)
        im = fit(isrc)
        inner[s] = grid_scores(im, itg[names].to_numpy(float), itg["label"].to_numpy(str), KK, DR)
    avg = {k: np.mean([inner[s][k] for s in inner]) for k in inner[next(iter(inner))]}
    best = max(avg, key=avg.get)
    model = fit(src)
    outer = grid_scores(model, Xt, yt, KK, 10)
    tr = la.adapt_transductive(model, Xt)
    ce = count_errs(yt, tr["proba"], model.classes_)
    m2 = la.fit_head(model, Xt, None, random_state=SEED)
    ce_self = count_errs(yt, m2.predict_proba(Xt), model.classes_)
    res[held] = {"inner_avg": {f"{h}/{t}": round(v, 4) for (h, t), v in avg.items()},
                 "chosen": list(best), "outer_chosen": outer[best], "outer_default": outer[(0.5, 20.0)],
                 "outer_all": {f"{h}/{t}": round(v, 4) for (h, t), v in outer.items()},
                 "count_k0_adapt_argmax_sum": ce, "count_k0_self_argmax_sum": ce_self,
                 "s": round(time.time() - t0)}
    print(held, json.dumps(res[held]), flush=True)
json.dump(res, open(f"/tmp/lt2/nested_k{KK}.json", "w"), indent=1)
