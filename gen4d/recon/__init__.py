"""4D construction: the optimisation of a :class:`gen4d.gaussians.dynamic.DynamicGaussians`
(coarse-to-fine), run checkpoints and outputs.

``gen4d.recon.stag4d`` (video -> 4D) builds on the same pieces.
"""

from gen4d.recon.checkpoint import find_checkpoint, load_checkpoint, load_run, save_checkpoint

__all__ = ["find_checkpoint", "load_checkpoint", "load_run", "save_checkpoint"]
