"""``gen4d render --assets LIST``: many assets rendered as a batch of Ray tasks (or local threads),
one Blender process each, into ``OUT/<asset id>/`` with a resumable results file
(:mod:`gen4d.data.batch`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gen4d.config import to_dict
from gen4d.data.batch import BatchConfig, Item, ResultsFormat, asset_id, run_batch
from gen4d.data.blender import RenderConfig, render_asset

__all__ = ["RESULTS_HEADER", "render_assets"]


RESULTS_HEADER = {"format": "gen4d.render", "version": 1}
"""First line of a ``gen4d render --assets`` results file (one JSON record per asset after it)."""


def _is_result(value: Any) -> bool:
    return isinstance(value, dict) and "asset" in value and "status" in value


def render_assets(
    items: list[Item],
    out: str | os.PathLike,
    config: RenderConfig | None = None,
    batch: BatchConfig | None = None,
    results: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Render a batch (:class:`gen4d.data.batch.Item` list) into ``out/<asset id>/``, one task per
    asset (:func:`gen4d.data.batch.run_batch`, ``batch`` a BatchConfig); records go to ``results``
    (default ``out/results.jsonl``): ``status`` done or error, ``reason``, ``manifest``. Resumable:
    recorded assets are skipped, a half-rendered folder is completed."""
    config = config or RenderConfig()
    out = Path(out).resolve()
    settings = to_dict(config)

    def folder(item: Item) -> Path:
        return out / asset_id(Path(str(item.path).replace(":", "_")), out)

    def failed(item: Item, reason: str) -> dict[str, Any]:
        return {"asset": item.entry, "path": item.path, "status": "error", "reason": reason, "settings": settings}

    def work(item: Item, timeout: float | None) -> dict[str, Any]:
        try:
            manifest = render_asset(item.path, folder(item), config, progress=False, timeout=timeout)
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:  # OSError: TaskTimeout too
            return failed(item, " ".join(str(err).split())[:1000])
        data = json.loads(manifest.read_text())
        clip = (data.get("clip") or {}).get("name")
        return {
            "asset": item.entry,
            "path": item.path,
            "status": "done",
            "reason": "",
            "manifest": str(manifest),
            "images": len(data["images"]),
            "clip": clip,
            "settings": settings,
        }

    results_path = Path(results) if results else out / "results.jsonl"
    fmt = ResultsFormat(RESULTS_HEADER, "render", _is_result)
    return run_batch(items, work, failed, results_path, fmt, batch or BatchConfig(), progress)
