"""Command-line options shared by ``gen4d render --assets`` and ``gen4d curate`` (batches of
assets, :mod:`gen4d.data.batch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gen4d.data.batch import OBJAVERSE_CACHE, BatchConfig, Item, read_asset_list, resolve_assets


def add_batch_arguments(parser: Any) -> None:
    """``--assets``, ``--objaverse-dir`` and the :class:`BatchConfig` options."""
    from gen4d.cli import number_type

    group = parser.add_argument_group("batch options (many assets as Ray tasks)")
    group.add_argument(
        "--assets",
        metavar="LIST",
        help="text file, one asset a line: a path (relative to the list's folder), procedural:SEED or an Objaverse id",
    )
    group.add_argument(
        "--objaverse-dir",
        metavar="DIR",
        help=f"folder searched for <id>.glb of Objaverse ids (default: the objaverse package's cache {OBJAVERSE_CACHE})",
    )
    group.add_argument(
        "--engine",
        default="ray",
        choices=["ray", "threads"],
        help="ray: one Ray task per asset (default); threads: local threads without Ray",
    )
    group.add_argument(
        "--ray-address",
        default="",
        metavar="ADDR",
        help="join this Ray cluster (auto, or HOST:6379 of `ray start --head`); default: a local Ray instance",
    )
    group.add_argument(
        "--workers",
        type=number_type(int, 0),
        default=0,
        help="assets at once on this machine, one Blender process each (local Ray CPUs or threads; 0: every CPU)",
    )
    group.add_argument(
        "--max-retries",
        type=number_type(int, 0),
        default=2,
        help="times an asset is retried after its worker process died (Ray; default 2)",
    )
    group.add_argument(
        "--timeout",
        type=number_type(float, 0),
        default=0.0,
        metavar="SECONDS",
        help="kill an asset's Blender after this long and record it as failed (0: no limit)",
    )


def batch_from_args(args: Any) -> BatchConfig:
    """The :class:`BatchConfig` of parsed :func:`add_batch_arguments` options."""
    return BatchConfig(
        engine=args.engine,
        ray_address=args.ray_address,
        workers=args.workers,
        max_retries=args.max_retries,
        timeout_s=args.timeout,
    )


def items_from_args(args: Any) -> list[Item]:
    """The resolved entries of ``--assets LIST`` (UserError when the list is missing or empty)."""
    from gen4d.errors import UserError

    try:
        entries = read_asset_list(args.assets)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    if not entries:
        raise UserError(f"--assets {args.assets}: the list is empty (expected one asset path or id a line)")
    return resolve_assets(entries, Path(args.assets).resolve().parent, args.objaverse_dir)
