"""``morphocell train-segmenter``: train the U-Net segmenter (deep extra)."""
from __future__ import annotations

import argparse

from ._common import add_command


def add_parser(subparsers):
    p = add_command(
        subparsers, "train-segmenter", "train the U-Net segmenter (deep extra)",
        """
Train the U-Net nucleus/cytoplasm segmenter on expert masks (a segwbc folder: datasetN/
NNN_image.png with NNN_mask.png; even ids train, odd ids are held out for evaluation),
optionally with pseudo-labels from confident Otsu segmentations of a PBC folder. Writes the
weights (.keras) and prints a JSON summary.

The expert masks come from --data, or from $MORPHOCELL_DATA/segwbc when the environment
variable MORPHOCELL_DATA names the data folder.""",
        "morphocell train-segmenter --data data/segwbc --pseudo data/pbc --out unet.keras\n"
        "MORPHOCELL_DATA=data morphocell train-segmenter --out unet.keras --epochs 20")
    p.add_argument("--out", required=True, help="weights file to write (.keras)")
    p.add_argument("--data", default=None,
                   help="segwbc folder with expert masks (default: $MORPHOCELL_DATA/segwbc)")
    p.add_argument("--pseudo", default=None, help="PBC folder for pseudo-labels")
    p.add_argument("--epochs", type=int, default=40, help="maximum epochs")
    p.add_argument("--base-filters", type=int, default=12,
                   help="filters of the first level, doubled per level")
    p.add_argument("--expert-repeat", type=int, default=3,
                   help="times each expert-annotated image appears per epoch")
    p.add_argument("--input-size", type=int, default=None,
                   help="network input side in pixels, a multiple of 16 (default 128); "
                        "inference reads it from the weights file")
    p.add_argument("--balance-datasets", action=argparse.BooleanOptionalAction, default=False,
                   help="repeat each expert dataset to the size of the largest, in training "
                        "and validation")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="start from these U-Net weights (fine-tuning); the input size and "
                        "architecture come from the file")
    p.add_argument("--learning-rate", type=float, default=None,
                   help="initial Adam learning rate, cosine-decayed to 5%% of it (default 2e-3)")
    p.add_argument("--random-state", type=int, default=0, help="seed of every random choice")
    return p


def _data_folder(data: str | None):
    import os
    from pathlib import Path

    from ..errors import DataError

    if data:
        return Path(data)
    root = os.environ.get("MORPHOCELL_DATA")
    if not root:
        raise DataError("no expert masks: give --data SEGWBC_FOLDER (or set MORPHOCELL_DATA "
                        "to the folder that holds segwbc/)")
    return Path(root) / "segwbc"


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from ..errors import DataError
    from ..segmentation.unet import (
        INPUT_SIZE,
        LEARNING_RATE,
        balance_datasets,
        load_segwbc,
        load_unet,
        pseudo_labels,
        save_unet,
        train_unet,
    )

    init = None
    if args.init is not None:  # fine-tuning: the file gives size and layers
        init = load_unet(args.init)
        size = int(init.input_shape[1])
        if args.input_size not in (None, size):
            raise DataError(f"--input-size {args.input_size} differs from the input size "
                            f"of --init {args.init} ({size})")
    else:
        size = args.input_size or INPUT_SIZE
    if size < 32 or size % 16:  # four 2x poolings must divide it; checked before any work
        raise DataError(f"--input-size must be a multiple of 16 and at least 32, got {size}")
    train_all = load_segwbc(_data_folder(args.data), held_out=False)
    rng = np.random.default_rng(args.random_state)
    idx = rng.permutation(len(train_all))
    n_val = max(1, len(train_all) // 6)
    val = [train_all[i] for i in idx[:n_val]]
    train = [train_all[i] for i in idx[n_val:]]
    # expert masks are few (~140) next to ~800 pseudo-labels: repeat them so that the
    # network sees expert boundaries at least as often as Otsu-derived ones
    repeat = max(1, int(args.expert_repeat or 1))
    if args.balance_datasets:
        train = balance_datasets(train, repeat, random_state=args.random_state)
        val = balance_datasets(val, 1, random_state=args.random_state)
    else:
        train = train * repeat
    if args.pseudo:
        pseudo = pseudo_labels(args.pseudo, random_state=args.random_state)
        print(f"pseudo-labels: {len(pseudo)} confident PBC images")
        train = train + pseudo
    print(f"training on {len(train)} images (experts x{repeat}), validating on {len(val)} "
          "(expert, even ids); odd ids are held out for evaluation")
    model, hist = train_unet(train, val, epochs=args.epochs or 40, input_size=size,
                             base_filters=args.base_filters or 16,
                             learning_rate=args.learning_rate or LEARNING_RATE,
                             random_state=args.random_state, init=init)
    out = Path(args.out)
    save_unet(model, out)
    print(json.dumps({"weights": str(out.with_suffix(".keras")),
                      "train_seconds": round(hist["train_seconds"], 1),
                      "epochs_run": len(hist["loss"]),
                      "n_train": hist["n_train"], "n_val": hist["n_val"],
                      "best_val_loss": min(hist["val_loss"])}))
    return 0
