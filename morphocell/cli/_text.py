"""Text of a training and an evaluation for the terminal (the CLI's presentation)."""
from __future__ import annotations


def format_cv_scores(scores: dict) -> str:
    """Out-of-fold accuracy and macro-F1 per learner as a small table."""
    width = max([len(n) for n in scores] + [len("learner")]) + 2
    lines = [f"  {'learner':<{width}}{'CV accuracy':>12}{'CV macro-F1':>13}"]
    for name, s in scores.items():
        lines.append(f"  {name:<{width}}{s['accuracy']:>12.4f}{s['macro_f1']:>13.4f}")
    return "\n".join(lines)


def format_review(r: dict) -> str:
    """One sentence on a model's review threshold (:func:`morphocell.report.review_threshold` output)."""
    if not r["n"]:
        return "review: no out-of-fold probabilities to choose a confidence threshold on"
    if r["threshold"] > 1:
        return (f"review: no confidence threshold reaches {r['target_accuracy']:.1%} accuracy "
                "out of fold; predict marks every cell needs_review")
    return (f"review threshold {r['threshold']:.3f}: out of fold, {r['review_fraction']:.1%} of "
            f"the {r['n']} training images fall below it, and {r['accepted_accuracy']:.2%} "
            f"of the others are right (target {r['target_accuracy']:.1%}); predict marks "
            "cells below it needs_review")


def format_base_learners(m: dict) -> str:
    """F1 per class of each base learner and of the stack (``m["base_learners"]`` of an
    evaluation), one column per class; ``""`` without base learners."""
    bl = m.get("base_learners")
    if not bl:
        return ""
    labels = [c for c in m["per_class"] if m["per_class"][c]["support"] > 0]
    cols = [max(len(c), 6) + 2 for c in labels]
    rows = [f"  {'model':<18}{'accuracy':>9}{'macro-F1':>9}" + "".join(
        f"{c:>{w}}" for c, w in zip(labels, cols, strict=True))]
    for name, r in list(bl.items()) + [("stack", {
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()}})]:
        rows.append(f"  {name:<18}{r['accuracy']:>9.4f}{r['macro_f1']:>9.4f}" + "".join(
            f"{r['per_class_f1'].get(c, float('nan')):>{w}.4f}"
            for c, w in zip(labels, cols, strict=True)))
    return "per-learner F1 (columns: classes):\n" + "\n".join(rows)
