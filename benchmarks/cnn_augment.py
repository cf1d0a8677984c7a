"""The CNN's training augmentation against another lab's images: ``standard`` vs ``stain``.

For each ``--augment`` value, one :class:`morphocell.deep.CNNEmbedder` (small-resnet, 64 px,
``--crop`` of the image, ``--epochs`` epochs, class-balanced loss, seed ``--random-state``) is
trained on the same stratified subset of ``--per-class`` PBC ``train`` images per class (all 8
classes) and scored, with its softmax restricted to the five segwbc classes
(``cross_lab.restricted_predict``), on:

* ``pbc_test``: the PBC ``test`` rows of those five classes (same lab);
* ``dataset1`` / ``dataset2``: segwbc (other labs; no preprocessing).

Nothing here is tuned on segwbc: the ``stain`` ranges are those of the hand-crafted models'
stain-augmented copies (``morphocell.preprocess.StainAugmentConfig``), fixed before.

Usage (from the repository root; ~4 min per value on 2 CPU cores)::

    python benchmarks/cnn_augment.py --data ../shared/data --augment standard,stain \\
        --out benchmarks/results/cnn_augment.json

Prints a table and writes the JSON atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cross_lab as cl  # the sibling script (benchmarks/ is sys.path[0] when run)


def run(data: Path, augments: list[str], per_class: int, epochs: int, crop: float,
        random_state: int) -> dict:
    from morphocell.deep import CNNEmbedder

    rows = cl.read_pbc_split(data)
    train = cl.stratified_subset([r for r in rows if r["split"] == "train"], per_class,
                                 random_state)
    test = [r for r in rows if r["split"] == "test" and r["label"] in cl.CLASSES]
    sets = {"pbc_test": ([r["path"] for r in test], [r["label"] for r in test])}
    for name in ("dataset1", "dataset2"):
        items = cl.read_segwbc(data / "segwbc" / name)
        sets[name] = ([str(it["image"]) for it in items], [it["label"] for it in items])
    out = {"settings": {"per_class": per_class, "n_train": len(train), "epochs": epochs,
                        "crop": crop, "input_size": 64, "random_state": random_state},
           "rows": []}
    for aug in augments:
        t0 = time.perf_counter()
        cnn = CNNEmbedder(architecture="small-resnet", input_size=64, crop=crop, epochs=epochs,
                          augment=aug, class_weight="balanced", random_state=random_state,
                          verbose=0)
        cnn.fit([r["path"] for r in train], [r["label"] for r in train])
        row = {"augment": aug, "fit_s": round(time.perf_counter() - t0, 1),
               "epochs_run": int(cnn.n_epochs_)}
        for name, (paths, labels) in sets.items():
            row[name] = cl.score(labels, cl.restricted_predict(cnn, paths))
        out["rows"].append(row)
        print(f"{aug:>9}: " + "  ".join(f"{n} {row[n]['accuracy']:.4f}" for n in sets),
              flush=True)
    return out


def to_markdown(res: dict) -> str:
    s = res["settings"]
    lines = [f"CNN (small-resnet, 64 px, crop {s['crop']}, {s['epochs']} epochs) on "
             f"{s['n_train']} PBC train images; accuracy / macro-F1 over the 5 segwbc classes",
             "", "| augment | PBC test (5 classes) | dataset1 | dataset2 | fit s |",
             "|---|---|---|---|---|"]
    for r in res["rows"]:
        cells = [f"{r[n]['accuracy']:.3f} / {r[n]['macro_f1']:.3f}"
                 for n in ("pbc_test", "dataset1", "dataset2")]
        lines.append(f"| {r['augment']} | " + " | ".join(cells) + f" | {r['fit_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("MORPHOCELL_DATA", "../shared/data")))
    ap.add_argument("--augment", default="standard,stain")
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--crop", type=float, default=0.75)
    ap.add_argument("--random-state", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "cnn_augment.json")
    a = ap.parse_args(argv)
    res = run(a.data, a.augment.split(","), a.per_class, a.epochs, a.crop, a.random_state)
    print(to_markdown(res))
    from morphocell._utils import atomic_path

    a.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(a.out) as tmp:
        Path(tmp).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
