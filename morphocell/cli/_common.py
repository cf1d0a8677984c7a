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
