"""Evaluation of 4D runs: protocols (Consistent4D, Diffusion4D), reports, benchmark helpers.

The metrics themselves are pure functions in :mod:`gen4d.metrics`.
"""

from gen4d.eval.core import ALL_METRICS, EvalCase, EvalConfig, collect_case, evaluate, group_views, resolve_protocol
from gen4d.eval.report import format_duration, load_report, markdown_report, read_generation_time, write_report

__all__ = [
    "ALL_METRICS",
    "EvalCase",
    "EvalConfig",
    "collect_case",
    "evaluate",
    "group_views",
    "resolve_protocol",
    "format_duration",
    "load_report",
    "markdown_report",
    "read_generation_time",
    "write_report",
]
