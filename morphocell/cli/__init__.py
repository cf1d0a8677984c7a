"""The ``morphocell`` command line: one entry point, one module per sub-command.

The sub-commands are presentation only: they parse their arguments, call the library
(:mod:`morphocell.train`, :mod:`morphocell.predict`, ...), print, and return an exit code
from the one table in :mod:`morphocell.cli._exit` (0 success; 3 some inputs failed, the good
results written; 2 user error; 1 internal error).

Adding a sub-command
--------------------
Write ``morphocell/cli/<name>.py`` with two functions and add ``"<name>"`` to
:data:`COMMANDS`::

    def add_parser(subparsers) -> argparse.ArgumentParser:
        p = add_command(subparsers, "name", "one-line summary", "description", "example")
        p.add_argument(...)
        return p

    def run(args) -> int:
        ...                   # call the library, print; raise MorphocellError for user errors
        return outcome(n_good, failures, "verb")

Keep the module's top-level imports light (argparse, pathlib, :mod:`morphocell.errors`,
``cli._common``, ``cli._exit``) and import the library inside ``run``, so that ``morphocell
--help`` stays fast. A module named ``train_segmenter`` is the command ``train-segmenter``.
``cli._common`` holds the help layout and shared options, ``cli._exit`` the exit codes and
the one place exceptions become codes, ``cli._text`` the terminal text of a training.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__
from ._exit import EXIT_INTERNAL, EXIT_OK, EXIT_PARTIAL, EXIT_USER, run

__all__ = [
    "COMMANDS",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USER",
    "build_parser",
    "main",
]

#: The sub-command modules of this package, in the order ``morphocell --help`` lists them.
COMMANDS = ["segment", "crop", "features", "train", "predict", "evaluate", "adapt", "review",
            "demo", "train_segmenter"]


def build_parser() -> argparse.ArgumentParser:
    """The ``morphocell`` parser with every sub-command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="morphocell",
        description="Blood-cell image analysis: segmentation, features, classification.",
        epilog="Exit codes: 0 success; 3 some inputs failed (the good results were written); "
               "2 user error (bad argument, input or model file); 1 internal error.\n"
               "'morphocell COMMAND --help' describes each command, with an example.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"morphocell {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full Python tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``morphocell`` with ``argv`` (default: the process arguments); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER
    return run(args.run, args, args.command, args.debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
