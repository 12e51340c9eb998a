"""Rendering of Gaussians: one interface, two backends (gsplat CUDA, PyTorch reference)."""

from gen4d.render.core import GSPLAT_HINT, RenderOptions, RenderOutput, available_backends, render, resolve_backend

__all__ = ["render", "RenderOptions", "RenderOutput", "available_backends", "resolve_backend", "GSPLAT_HINT"]
