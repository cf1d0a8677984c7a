import sys, json, time
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import lab_transfer as LT
from pathlib import Path
from morphocell.ensembles import lab_adaptive as la
from morphocell.features.extractor import feature_names

names = np.array(feature_names(None))
labs = LT.load_labs(Path("/work/shared/data"), Path("/tmp/lt"), LT.LABS)
SEED = 0
ANCH = list(la.ANCHOR_CLASSES)
QS = [0.0, 0.25, 0.5, 0.75]
MODE = sys.argv[1] if len(sys.argv) > 1 else "instab"

def zmeans(src):
    M = src[list(names)].to_numpy(float); y = src["label"].to_numpy(str); d = src["domain"].to_numpy(str)
    mus = []
    for lab in sorted(set(d)):
        r = d == lab
        oh = (y[r][:, None] == np.array(ANCH)[None, :]).astype(float)
        loc, sc = la.balanced_stats(M[r], oh, min_weight=1.0)
        Z = la._standardize(M[r], loc, sc)
        mus.append([np.nanmean(Z[y[r] == c], axis=0) for c in ANCH])
    return np.array(mus)  # (L, C, p)

def order(src):
    mu = zmeans(src)
    inst = np.nanmean(np.nanvar(mu, axis=0), axis=0)
    disc = np.nanvar(np.nanmean(mu, axis=0), axis=0)
    s = inst if MODE == "instab" else -(disc / (inst + 0.05))
    s = np.where(np.isfinite(s), s, np.inf)
    return np.argsort(s)  # most stable first

def cols_for(src, q):
    o = order(src)
    return list(names[o[: int(round(len(o) * (1 - q)))]])

def k0(src, tgt, cols):
    known = set(src["label"])
    tgt = tgt[tgt["label"].isin(known)].reset_index(drop=True)
    m = la.LabAdaptiveClassifier(LT.make_learner("svc", SEED), random_state=SEED).fit(
        src[cols].to_numpy(float), src["label"].to_numpy(str), domains=src["domain"].to_numpy())
    tr = la.adapt_transductive(m, tgt[cols].to_numpy(float))
    return LT.score(tgt["label"].to_numpy(str), tr["proba"], m.classes_)

res = {}
for held in LT.LABS:
    t = time.time()
    src, tgt = LT.source_target(labs, held, False, SEED, 300)
    inner = {q: [] for q in QS}
    for s in sorted(set(src["domain"])):
        isrc = src[src["domain"] != s]; itg = src[src["domain"] == s]
        for q in QS:
            inner[q].append(k0(isrc, itg, cols_for(isrc, q))["accuracy"])
    avg = {q: float(np.mean(v)) for q, v in inner.items()}
    best = max(avg, key=avg.get)
    outer = {q: k0(src, tgt, cols_for(src, q)) for q in QS}
    res[held] = {"inner": avg, "chosen": best,
                 "outer": {q: [round(v["accuracy"], 3), round(v["macro_f1"], 3), round(v["count_error"], 3)] for q, v in outer.items()},
                 "recall_chosen": outer[best]["recall"], "s": round(time.time() - t)}
    print(held, json.dumps(res[held]), flush=True)
json.dump(res, open(f"./stable_{MODE}.json", "w"), indent=1)
