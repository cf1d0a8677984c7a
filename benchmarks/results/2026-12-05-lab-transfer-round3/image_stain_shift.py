"""LOLO features on images whose colour is shifted, per image, so that the L*a*b* mean of the
pixels outside the white cell (background + red cells) equals PBC's (mean over 400 PBC train
images).  Output: /tmp/lt4/lt_<lab>.parquet (PBC: 300 train/class + test rows)."""
import sys, time
import numpy as np, pandas as pd, cv2
sys.path.insert(0, "/work/main/benchmarks")
import lab_transfer as LT
from pathlib import Path
from morphocell.features import extractor
from morphocell.io import read_image
from morphocell.segmentation import segment
from morphocell.preprocess.stain import _to_lab
names = extractor.feature_names(None)
K = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
def outside_mean(img):
    m = segment(img)
    cell = (m.nucleus | m.cytoplasm).astype(np.uint8)
    out = cv2.dilate(cell, K) == 0
    lab = _to_lab(img)
    return lab[out].mean(axis=0) if out.sum() > 100 else lab.reshape(-1, 3).mean(axis=0)
def shift(img, ref):
    lab = _to_lab(img) + (ref - outside_mean(img))
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
labs = LT.load_labs(Path("/work/shared/data"), Path("/tmp/lt3"), LT.LABS)
pbc = labs["pbc"][labs["pbc"].status == "ok"]
tr = LT._per_class(pbc[pbc.split == "train"], 300, 0)
rng = np.random.default_rng(1)
refimgs = tr.path.to_numpy()[rng.choice(len(tr), 400, replace=False)]
ref = np.mean([outside_mean(read_image(p)) for p in refimgs], axis=0)
print("ref", ref, flush=True)
for lab, df in labs.items():
    if lab == "pbc":
        df = pd.concat([tr, pbc[pbc.split == "test"]])
    df = df[df.status == "ok"].reset_index(drop=True)
    t = time.time()
    imgs = [shift(read_image(p), ref) for p in df.path]
    mat, st, _ = extractor.extract_batch(imgs, n_jobs=1)
    out = df[list(LT.META)].copy(); out["status"] = st
    pd.concat([out, pd.DataFrame(mat, columns=names)], axis=1).to_parquet(f"/tmp/lt4/lt_{lab}.parquet", index=False)
    print(lab, len(df), round(time.time() - t), "s", flush=True)
