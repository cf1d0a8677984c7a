import sys, json
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import lab_transfer as LT
from pathlib import Path
from morphocell.ensembles import lab_adaptive as la
from morphocell.features.extractor import feature_names

names = feature_names(None)
labs = LT.load_labs(Path("/work/shared/data"), Path("/tmp/lt"), LT.LABS)
SEED = 0
def grp(n): return n.split("_")[1]
SUB = {
 "all": names,
 "shape+texture": [n for n in names if grp(n) in ("Shape", "Texture")],
 "no_colour_location": [n for n in names if grp(n) != "Color" or not any(s in n for s in ("_Mean_", "_Median_", "_P10_", "_P90_"))],
}
def k0(src, tgt, cols):
    known = set(src["label"])
    tgt = tgt[tgt["label"].isin(known)].reset_index(drop=True)
    m = la.LabAdaptiveClassifier(LT.make_learner("svc", SEED), random_state=SEED).fit(
        src[cols].to_numpy(float), src["label"].to_numpy(str), domains=src["domain"].to_numpy())
    tr = la.adapt_transductive(m, tgt[cols].to_numpy(float))
    return LT.score(tgt["label"].to_numpy(str), tr["proba"], m.classes_)
res = {}
for held in LT.LABS:
    src, tgt = LT.source_target(labs, held, False, SEED, 300)
    inner = {k: [] for k in SUB}
    for s in sorted(set(src["domain"])):
        isrc = src[src["domain"] != s]; itg = src[src["domain"] == s]
        for k, cols in SUB.items():
            inner[k].append(k0(isrc, itg, cols)["accuracy"])
    avg = {k: float(np.mean(v)) for k, v in inner.items()}
    best = max(avg, key=avg.get)
    outer = {k: k0(src, tgt, cols) for k, cols in SUB.items()}
    res[held] = {"inner": avg, "chosen": best,
                 "outer": {k: [round(v["accuracy"], 3), round(v["macro_f1"], 3), round(v["count_error"], 3)] for k, v in outer.items()}}
    print(held, json.dumps(res[held]), flush=True)
json.dump(res, open("/tmp/lt2/subsets.json", "w"), indent=1)
