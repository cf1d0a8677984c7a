"""``morphocell train-segmenter``: train the U-Net segmenter (deep extra)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MorphocellError


def train_command(args) -> int:
    """CLI: ``morphocell train-segmenter --out WEIGHTS [--data segwbc] [--pseudo pbc]``."""
    import json

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
    if getattr(args, "init", None) is not None:  # fine-tuning: the file gives size and layers
        init = load_unet(args.init)
        size = int(init.input_shape[1])
        if getattr(args, "input_size", None) not in (None, size):
            raise MorphocellError(f"--input-size {args.input_size} differs from the input size "
                                  f"of --init {args.init} ({size})")
    else:
        size = getattr(args, "input_size", None) or INPUT_SIZE
    if size < 32 or size % 16:  # four 2x poolings must divide it; checked before any work
        raise MorphocellError(f"--input-size must be a multiple of 16 and at least 32, got {size}")
    data = Path(args.data) if args.data else Path(os.environ.get(
        "MORPHOCELL_DATA", "../shared/data")) / "segwbc"
    train_all = load_segwbc(data, held_out=False)
    rng = np.random.default_rng(args.random_state)
    idx = rng.permutation(len(train_all))
    n_val = max(1, len(train_all) // 6)
    val = [train_all[i] for i in idx[:n_val]]
    train = [train_all[i] for i in idx[n_val:]]
    # expert masks are few (~140) next to ~800 pseudo-labels: repeat them so that the
    # network sees expert boundaries at least as often as Otsu-derived ones
    repeat = max(1, int(getattr(args, "expert_repeat", 1) or 1))
    if getattr(args, "balance_datasets", False):
        train = balance_datasets(train, repeat, random_state=args.random_state)
        val = balance_datasets(val, 1, random_state=args.random_state)
    else:
        train = train * repeat
    if args.pseudo:
        pseudo = pseudo_labels(args.pseudo, random_state=args.random_state)
        print(f"pseudo-labels: {len(pseudo)} confident PBC images")
        train = train + pseudo
    print(f"training on {len(train)} images (experts x{repeat}), validating on {len(val)} "
          "(expert, even ids); "
          "odd ids are held out for evaluation")
    model, hist = train_unet(train, val, epochs=args.epochs or 40, input_size=size,
                             base_filters=getattr(args, "base_filters", 16) or 16,
                             learning_rate=getattr(args, "learning_rate", None) or LEARNING_RATE,
                             random_state=args.random_state, init=init)
    out = Path(args.out)
    save_unet(model, out)
    print(json.dumps({"weights": str(out.with_suffix(".keras")),
                      "train_seconds": round(hist["train_seconds"], 1),
                      "epochs_run": len(hist["loss"]),
                      "n_train": hist["n_train"], "n_val": hist["n_val"],
                      "best_val_loss": min(hist["val_loss"])}))
    return 0
