"""The ``visuallens`` command: thin argument parsing over the library; text or ``--json`` output.

Each command group lives in its own module with a ``register(subparsers)`` function; importing
this package must stay cheap (no torch) so that ``visuallens --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from visuallens_app import __version__
from visuallens_app.cli import common

#: Modules whose ``register(subparsers)`` adds commands, in the order --help lists them.
COMMAND_MODULES = (
    "visuallens_app.cli.library",
    "visuallens_app.cli.lens",
    "visuallens_app.cli.evaluate",
    "visuallens_app.cli.models",
    "visuallens_app.cli.tldr",
    "visuallens_app.cli.steer",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="visuallens",
        description=(
            "VisualLens Studio: index your photo folders, search them by text or by example, and "
            "get recommendations explained by your own photos. Everything runs on this machine."
        ),
        epilog="Run `visuallens COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"visuallens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def _command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command the user typed, e.g. ``models download-clip``'s."""
    for action in parser._actions:  # argparse has no public way to walk its subcommands
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None) if action.dest != argparse.SUPPRESS else None
            if chosen in action.choices:
                return _command_parser(action.choices[chosen], args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, so its usage is what is shown
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return common.run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
