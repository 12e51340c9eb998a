"""The ``gen4d`` command.

Each subcommand lives in ``gen4d/commands/<module>.py`` and defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only to build the parser
and run, and heavy libraries are imported inside ``run`` so ``gen4d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from gen4d.errors import UserError

__all__ = ["UserError", "build_parser", "main"]

# The order here is the order in `gen4d --help`.
COMMAND_MODULES = [
    "demo",
    "reconstruct",
    "video",
    "render",
    "curate",
    "train_vdm",
    "sample_vdm",
    "eval",
    "bench",
    "view",
    "info",
]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="gen4d",
        description="gen4d: video, image, text or static 3D -> 4D Gaussians (STAG4D, Diffusion4D).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"gen4d.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"gen4d.commands.{name}":
                continue  # not part of this build
            raise
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        modules[module.NAME] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt as err:
        # A run's RunInterrupted says what was saved; anything else promises nothing.
        print(f"\ninterrupted: {err}" if str(err) else "\ninterrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, ValueError, RuntimeError, ImportError) as err:
        if args.debug:
            raise
        print(f"gen4d {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
