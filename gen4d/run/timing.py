"""Timing and memory of a run: peak memory (CUDA allocator and process RSS) for metrics.json."""

from __future__ import annotations

import resource

import torch

__all__ = ["peak_memory", "release_memory", "reset_peak_memory"]


def reset_peak_memory(device: torch.device) -> None:
    """Start counting the CUDA allocator's peak anew (nothing to do on a CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak memory in MiB: CUDA allocator peak on a GPU; the process's peak RSS always."""
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_gpu_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out


def release_memory(device: torch.device) -> None:
    """Collect garbage and, on CUDA, return the cached blocks of freed tensors to the driver (between
    stages whose models must not share the GPU)."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
