"""4D construction: the DynamicGaussians model, its optimisation (coarse-to-fine), run outputs.

``gen4d.recon.stag4d`` (video -> 4D) builds on the same pieces.
"""

from gen4d.recon.checkpoint import find_checkpoint, load_checkpoint, load_run, save_checkpoint
from gen4d.recon.model import DynamicGaussians

__all__ = ["DynamicGaussians", "load_run", "load_checkpoint", "save_checkpoint", "find_checkpoint"]
