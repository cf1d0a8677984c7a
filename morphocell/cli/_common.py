"""What the sub-command modules share: the help layout and the common options."""
from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and examples kept as written; defaults shown, except ``None`` / ``False``
    (an option that is off, or whose default the help text explains)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def add_command(subparsers, name: str, summary: str, description: str,
                example: str) -> argparse.ArgumentParser:
    """A sub-command parser with a one-line ``summary`` (the top-level list), a
    ``description`` and an ``example`` (shown at the end of its ``--help``)."""
    return subparsers.add_parser(
        name, help=summary, description=description.strip(),
        epilog="example:\n" + "\n".join("  " + line for line in example.strip().splitlines()),
        formatter_class=HelpFormatter)


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_n_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-jobs", type=int, default=1, help="worker processes")


def add_cache_dir(p: argparse.ArgumentParser, default_text: str = "none") -> None:
    p.add_argument("--cache-dir", default=None,
                   help=f"feature cache folder (default: {default_text})")


#: The readings of a folder given as input (:data:`morphocell.io.LAYOUTS`, repeated here so
#: that ``--help`` does not import the library).
LAYOUTS = ("auto", "flat", "classes")


def add_layout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", default="auto", choices=LAYOUTS,
                   help="how a folder given as input is read: auto (images only: unlabelled; "
                   "class subfolders only: one class per subfolder; both: an error naming "
                   "them), flat (the images directly inside; subfolders ignored) or classes "
                   "(one class per subfolder; loose images ignored)")


def list_inputs(command: str, inputs, layout: str = "auto", *, labelled: bool = False):
    """:func:`morphocell.io.list_entries` of the command's inputs, with what the listing
    left out said on stderr (:func:`say_listing`)."""
    from ..io import list_entries

    lst = list_entries(inputs, layout=layout, labelled=labelled)
    say_listing(command, lst.report)
    return lst


def say_listing(command: str, report) -> None:
    """Stderr lines on what a listing (:class:`morphocell.io.ListingReport`) left out: masks
    and overlays skipped, class folders without images, folders and loose images ignored."""
    import os

    head = f"morphocell {command}: "
    if report.skipped:
        n = len(report.skipped)
        eprint(head + f"skipped {plural(n, 'mask or overlay', 'masks and overlays')} (files "
               f"morphocell writes, or expert *_mask.png; never cells), first: "
               f"{report.skipped[0]}")
    if report.empty_classes:
        n = len(report.empty_classes)
        eprint(head + f"warning: {plural(n, 'class folder')} without images (no cell of "
               "that class is counted): " + ", ".join(report.empty_classes[:5])
               + (" ..." if n > 5 else ""))
    folders = [p for p in report.ignored if os.path.isdir(p)]
    images = [p for p in report.ignored if not os.path.isdir(p)]
    if folders:
        eprint(head + f"warning: ignored {plural(len(folders), 'folder')} (not read: "
               "--layout flat reads the images directly inside a folder, and a class folder "
               "is one level deep), first: " + folders[0])
    if images:
        eprint(head + f"warning: ignored {plural(len(images), 'image')} outside the class "
               "folders (--layout classes reads one class per subfolder; --layout flat reads "
               "these), first: " + images[0])


def add_adapt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapt", action="store_true",
                   help="adapt the model to these images before classifying them (the "
                   "features standardised on them, class priors re-estimated, "
                   "self-training on confident cells; no labels used, nothing written; "
                   "models that can be adapted: 'default' and multi-lab models; at least "
                   "20 images)")


def adapt_to_batch(model, paths, args, say=print):
    """``model`` adapted to the unlabelled images ``paths`` (``--adapt``:
    :func:`morphocell.adapt.adapt` with no labels, nothing written); one line through
    ``say``. :class:`~morphocell.adapt.AdaptError` (a model that cannot be adapted, too few
    images) is a user error: exit 2."""
    from ..adapt import adapt

    adapted, info = adapt(model, paths, None, n_jobs=args.n_jobs, cache_dir=args.cache_dir,
                          verbose=0 if args.quiet else 1)
    n_used = len(paths) - int(info["n_failed"])
    priors = info.get("priors") or {}
    top = sorted(priors.items(), key=lambda kv: -kv[1])[:3]
    say(f"adapted the model to these {plural(n_used, 'image')} ({info['method']}, no labels "
        "used, nothing written)" + (
            "; class priors re-estimated: " + ", ".join(f"{c} {v:.0%}" for c, v in top)
            + (" ..." if len(priors) > 3 else "") if top else ""))
    return adapted


def eprint(*parts) -> None:
    """Print to stderr."""
    print(*parts, file=sys.stderr)


def plural(n: int, word: str, plural_form: str | None = None) -> str:
    """:func:`morphocell.report.plural` (imported on first use: ``--help`` stays light)."""
    from ..report import plural as _plural

    return _plural(n, word, plural_form)


def warn_duplicates(command: str, duplicates, what: str) -> None:
    """One stderr line on files that repeat an image listed before them (same content)."""
    if duplicates:
        n = sum(len(g) - 1 for g in duplicates)
        verb = "repeats" if n == 1 else "repeat"
        eprint(f"morphocell {command}: warning: {plural(n, 'file')} {verb} an image listed "
               f"before (same content): {what}; first: " + " = ".join(duplicates[0]))
