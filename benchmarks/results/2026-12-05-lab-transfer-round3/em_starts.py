import sys, json, time
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
import lab_transfer as LT
from pathlib import Path
from morphocell.ensembles import lab_adaptive as la
from morphocell.features.extractor import feature_names
names = feature_names(None)
labs = LT.load_labs(Path("/work/shared/data"), Path("/tmp/lt3"), LT.LABS)
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
ppc = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "all" else None
out = {}
for held in LT.LABS:
    src, tgt = LT.source_target(labs, held, False, seed, ppc)
    known = set(src.label); tgt = tgt[tgt.label.isin(known)].reset_index(drop=True)
    Xt, yt = tgt[names].to_numpy(float), tgt.label.to_numpy(str)
    m = la.LabAdaptiveClassifier(LT.make_learner("svc", seed), random_state=seed).fit(
        src[names].to_numpy(float), src.label.to_numpy(str), domains=src.domain.to_numpy())
    base = la.adapt_transductive(m, Xt)
    r = {"nearest": LT.score(yt, base["proba"], m.classes_)}
    orig = m.nearest_domain
    ps = []
    for k in range(len(m.domains_)):
        m.nearest_domain = lambda X, k=k: k
        ps.append(la.adapt_transductive(m, Xt)["proba"])
        r[f"start_{m.domains_[k]}"] = LT.score(yt, ps[-1], m.classes_)
    m.nearest_domain = orig
    r["mean_of_starts"] = LT.score(yt, np.mean(ps, axis=0), m.classes_)
    r["n_iter10"] = LT.score(yt, la.adapt_transductive(m, Xt) ["proba"] if False else (lambda: (setattr(m, "n_iter", 10), la.adapt_transductive(m, Xt)["proba"])[1])(), m.classes_)
    out[held] = {k: [round(v["accuracy"], 3), round(v["count_error"], 3)] for k, v in r.items()}
    print(held, out[held], flush=True)
json.dump(out, open(f"./multistart_{seed}_{ppc}.json", "w"), indent=1)
