"""CUDA graphs of the parts of a construction step whose shapes do not change from step to step.

A training step on a GPU is bound by the host: on an H200 the kernels of a ``default`` fine step
take about 5 ms, launching them from Python about 30 ms (docs/benchmarks.md). Two parts of the step
have fixed shapes and no host synchronisation, so each is captured once (forward and backward,
:func:`torch.cuda.make_graphed_callables`) and replayed as one launch:

* the image losses (L1, D-SSIM, alpha, depth smoothness): inputs are the renders and targets, whose
  shapes are fixed by the image size and the cameras per step, whatever the Gaussians do;
* the deformation (a ``capturable`` field: HexPlane; whole-object turn) and the field's
  regularisers (plane TV, time smoothness, local rigidity): fixed while the set of Gaussians is.
  Densification replaces the parameter tensors, so the next step captures again and the previous
  capture is dropped (one live deformation capture at a time).

The rasteriser stays eager (gsplat sizes its tile lists on the host). The graphs run the same kernels
on the same values, so losses and gradients equal the eager step's up to the order in which
gradients from several paths are summed (float rounding; ``tests/test_graphs_cuda.py`` compares
them). A capture is keyed by what it reads: shapes, the loss weights and the addresses of the model's
tensors, so densification or a new turn track makes a new one (and frees the deformation capture it
replaces: the old graph holds the old parameters, so their addresses cannot be reused while it is
kept, and a dropped key is never looked up again). A capture that fails stops the run
with an error that names ``--cuda_graphs false``. No autograd graph of an eager pass may be alive
while a capture runs: it holds the parameters' gradient accumulators, made on the default stream,
and the capture stream accumulating into them invalidates the capture. Outputs of a replay are the
graph's own buffers: a step's loss terms are valid until the next step (sums made from them are not
affected).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gen4d.deform.rigidity import rigidity_anchors
from gen4d.gaussians.core import Gaussians
from gen4d.recon import losses as L
from gen4d.recon.losses import LossWeights

__all__ = ["StepGraphs"]


@dataclass
class _Images:
    """The render fields the image losses read (a RenderOutput stand-in inside a graph)."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor


class _ImageLosses(nn.Module):
    def __init__(self, weights: LossWeights, names: tuple[str, ...], with_mask: bool):
        super().__init__()
        self.weights, self.names, self.with_mask = weights, names, with_mask

    def forward(self, rgb, alpha, depth, target, mask=None):
        terms = L.image_losses(_Images(rgb, alpha, depth), target, mask if self.with_mask else None, self.weights)
        return tuple(terms[name] for name in self.names)


class _Deformation(nn.Module):
    """``(times, anchors) -> (deformed fields, weighted regularisers)`` of a DynamicGaussians
    (``anchors`` is ignored when the rigidity terms are off)."""

    def __init__(self, model, weights: LossWeights, fields: tuple[str, ...], regs: tuple[str, ...], rigid: bool):
        super().__init__()
        self.model, self.weights, self.fields, self.regs, self.rigid = model, weights, fields, regs, rigid

    def forward(self, times, anchors):
        at = self.model.at(times)
        regs = self.model.regularization(times, at=at, anchors=anchors if self.rigid else None)
        terms = L.weighted_regularizers(regs, self.weights)
        return tuple(getattr(at, name) for name in self.fields), tuple(terms[name] for name in self.regs)


def _aliases(tensor: torch.Tensor, other: torch.Tensor) -> bool:
    return tensor.untyped_storage().data_ptr() == other.untyped_storage().data_ptr()


class StepGraphs:
    """The captured parts of one run's steps (see the module docstring); ``enabled=False`` or a
    non-CUDA device leaves every step eager."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = bool(enabled) and device.type == "cuda"
        self._graphs: dict[Any, Any] = {}

    def _capture(self, key, build, single: bool = False):
        """The capture for ``key``, built on first use; ``single``: drop the other captures of the same
        kind (``key[0]``) first, whose tensors are gone (densification replaced them)."""
        if key not in self._graphs:
            if single:
                for old in [k for k in self._graphs if k[0] == key[0]]:
                    del self._graphs[old]
            # Free what is garbage now (a dropped capture's graphs may sit in reference cycles) and
            # keep the collector off while capturing: a graph destroyed by a collection that runs
            # inside a capture would make CUDA calls that invalidate it.
            gc.collect()
            collecting = gc.isenabled()
            gc.disable()
            try:
                self._graphs[key] = build()
            except Exception as err:
                # A failed capture can leave the CUDA generator in capture mode, so the run cannot
                # go on eagerly in this process; the last checkpoint resumes it. The first error of
                # the chain is the cause (ending an invalidated capture raises a second one).
                first = err
                while first.__context__ is not None:
                    first = first.__context__
                cause = f"{type(first).__name__}: {first}" + (
                    "" if first is err else f"; then {type(err).__name__}: {err}"
                )
                raise RuntimeError(
                    f"CUDA graph capture failed ({cause}); resume the run with --cuda_graphs false (same "
                    "maths, slower) and report this"
                ) from err
            finally:
                if collecting:
                    gc.enable()
        return self._graphs[key]

    # -- image losses --------------------------------------------------------------------------------
    def image_losses(
        self, output, target: torch.Tensor, alpha: torch.Tensor | None, weights: LossWeights, lpips_model=None
    ) -> dict[str, torch.Tensor] | None:
        """The weighted image terms of :func:`gen4d.recon.losses.image_losses` from a graph, or None
        (run them eagerly): also when an LPIPS term is on, which is never captured."""
        if not self.enabled or (weights.lpips and lpips_model is not None):
            return None
        inputs = (output.rgb, output.alpha, output.depth, target) + (() if alpha is None else (alpha,))
        key = ("images", weights, tuple((tuple(x.shape), x.dtype) for x in inputs))

        def build():
            trial = L.image_losses(output, target, alpha, weights)
            names = tuple(trial)
            del trial  # its autograd graph must not be alive during the capture (module docstring)
            samples = tuple(x.detach().clone().requires_grad_(i < 3) for i, x in enumerate(inputs))
            module = _ImageLosses(weights, names, alpha is not None)
            return names, torch.cuda.make_graphed_callables(module, samples, allow_unused_input=True)

        names, module = self._capture(key, build)
        return dict(zip(names, module(*inputs)))

    # -- deformation and its regularisers ------------------------------------------------------------
    def deformation(self, model, times: torch.Tensor, weights: LossWeights):
        """``(at, weighted regularisers)`` of :class:`gen4d.gaussians.dynamic.DynamicGaussians` at
        ``times`` from a graph, or None (run them eagerly): only for a field without hidden state
        (``capturable``: HexPlane); a changed set of Gaussians (densification) is
        captured again."""
        if not self.enabled or not model.deform_enabled or not model.field.capturable:
            return None
        rigidity = model.deform_config.rigidity
        rigid = rigidity.samples > 0
        device = model.device
        # Drawn outside the graph, in the eager step's order (the rasteriser draws no random numbers).
        anchors = (
            rigidity_anchors(model.num_gaussians, rigidity, device)
            if rigid
            else torch.zeros(1, dtype=torch.long, device=device)
        )
        tensors = tuple(model.parameters()) + tuple(model.buffers())
        key = ("deformation", weights, tuple(times.shape), times.dtype, tuple(anchors.shape),
               tuple((t.data_ptr(), tuple(t.shape)) for t in tensors))  # fmt: skip

        def build():
            at = model.at(times)
            params = model.canonical()
            fields = tuple(name for name in at.as_dict() if not _aliases(getattr(at, name), getattr(params, name)))
            regs = model.regularization(times, at=at, anchors=anchors if rigid else None)
            names = tuple(L.weighted_regularizers(regs, weights))
            # No autograd graph of an eager pass may be alive during the capture: it holds the
            # parameters' gradient accumulators, made on the default stream, and accumulating into
            # them from the capture stream would invalidate the capture.
            del at, params, regs
            module = _Deformation(model, weights, fields, names, rigid)
            samples = (times.detach().clone(), anchors.clone())
            return module, torch.cuda.make_graphed_callables(module, samples, allow_unused_input=True)

        module, graphed = self._capture(key, build, single=True)
        deformed, regs = graphed(times, anchors)
        batch = times.shape[0]
        values = dict(zip(module.fields, deformed))
        expand = lambda x: x.unsqueeze(0).expand((batch,) + tuple(x.shape))  # noqa: E731  (as the eager field)
        at = Gaussians(**{name: values[name] if name in values else expand(value)
                          for name, value in model.canonical().as_dict().items()})  # fmt: skip
        return at, dict(zip(module.regs, regs))
