"""The ``gen4d`` command.

Each subcommand lives in ``gen4d/commands/<module>.py`` and defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import nothing heavy at
module level; ``add_arguments`` (which may import config classes, and so torch) runs only for the
command being used, and heavy libraries are imported inside ``run``, so ``gen4d --help`` and
``gen4d --version`` do not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing

from gen4d.errors import UserError

__all__ = ["build_parser", "main", "number_type"]

# The order here is the order in `gen4d --help`.
COMMAND_MODULES = [
    "demo",
    "reconstruct",
    "video",
    "image",
    "text",
    "animate",
    "render",
    "curate",
    "cache_latents",
    "train_vdm",
    "sample_vdm",
    "convert_videomv",
    "eval",
    "bench",
    "view",
    "export",
    "info",
]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``gen4d reconstruct: error: argument --preset: invalid choice ...``
    and a pointer to ``--help`` instead of the whole usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def number_type(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """argparse ``type=`` for a number in a range; errors read ``argument --size: expected an
    integer > 0, got 'abc'``."""
    word = "an integer" if kind is int else "a number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    expected = f"{word} {' and '.join(bounds)}".strip()

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high) or value != value:  # NaN
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = word
    return parse


def _selected_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a top-level option)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word
    return None


def build_parser(commands: typing.Iterable[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The ``gen4d`` parser. Every command is listed; only those in ``commands`` (default: all) get
    their options, since building them imports their config classes (and torch, for most)."""
    from gen4d import __version__

    parser = ArgumentParser(
        prog="gen4d",
        description="gen4d: video, image, text or static 3D -> 4D Gaussians (STAG4D, Diffusion4D).",
    )
    parser.add_argument("--version", action="version", version=f"gen4d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    wanted = None if commands is None else set(commands)
    modules = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"gen4d.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"gen4d.commands.{name}":
                continue  # not part of this build
            raise
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        if wanted is None or module.NAME in wanted:
            module.add_arguments(command)
        modules[module.NAME] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser([_selected_command(argv) or ""])
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    if isinstance(getattr(args, "out", None), str) and not args.out.strip():  # it would mean the current folder
        print(f"gen4d {args.command}: error: --out is empty; pass a folder path", file=sys.stderr)
        return 2
    from gen4d.threads import configure_threads

    try:
        configure_threads()
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt as err:
        # A run's RunInterrupted says what was saved; anything else promises nothing.
        print(f"\ninterrupted: {err}" if str(err) else "\ninterrupted", file=sys.stderr)
        return 130
    except (UserError, OSError, ValueError, RuntimeError, ImportError) as err:
        if args.debug:
            raise
        print(f"gen4d {args.command}: error: {_describe_error(err)}", file=sys.stderr)
        return 2


def _describe_error(err: BaseException) -> str:
    """One line for an error: OS errors name the path and the cause ("out/run.jsonl: Not a
    directory (a part of the path is a file)") instead of Python's "[Errno 20] ..." form."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        hints = {
            "NotADirectoryError": " (a part of the path is a file, not a folder)",
            "PermissionError": " (choose a location you can write to)",
            "FileExistsError": " (a file is in the way)",
        }
        return f"{err.filename}: {err.strerror}{hints.get(type(err).__name__, '')}"
    return " ".join(str(err).split("\n")[:2]) if isinstance(err, OSError) else str(err)


if __name__ == "__main__":
    sys.exit(main())
