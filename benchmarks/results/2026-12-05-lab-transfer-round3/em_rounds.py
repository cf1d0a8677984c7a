import sys, json
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import lab_transfer as LT
from pathlib import Path
from morphocell.ensembles import lab_adaptive as la
from morphocell.features.extractor import feature_names
names = feature_names(None)
labs = LT.load_labs(Path("/work/shared/data"), Path("/tmp/lt3"), LT.LABS)
seed = int(sys.argv[1]); ppc = None if sys.argv[2] == "all" else int(sys.argv[2])
out = {}
for held in LT.LABS:
    src, tgt = LT.source_target(labs, held, False, seed, ppc)
    known = set(src.label); tgt = tgt[tgt.label.isin(known)].reset_index(drop=True)
    Xt, yt = tgt[names].to_numpy(float), tgt.label.to_numpy(str)
    m = la.LabAdaptiveClassifier(LT.make_learner("svc", seed), random_state=seed).fit(
        src[names].to_numpy(float), src.label.to_numpy(str), domains=src.domain.to_numpy())
    r = {}
    for n in (1, 3, 5, 10, 20, 40):
        m.n_iter = n
        s = LT.score(yt, la.adapt_transductive(m, Xt)["proba"], m.classes_)
        r[n] = [round(s["accuracy"], 3), round(s["count_error"], 3)]
    out[held] = r
    print(held, r, flush=True)
json.dump(out, open(f"./niter_{seed}_{sys.argv[2]}.json", "w"), indent=1)
