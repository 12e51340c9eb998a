"""One-command routes to 4D Gaussians (``gen4d image``, ``gen4d text``, ``gen4d animate``), built
from stages on :mod:`gen4d.run.stages`:

* STAG4D route (public weights): [text -> image (SDXL)] -> image -> video (Stable Video Diffusion)
  -> matting + recentring -> ``gen4d video`` (Zero123++ anchored views + STAG4D optimisation);
* Diffusion4D route (a trained video model): image / text -> orbital video -> 4D construction;
* animate: static mesh or 3DGS PLY -> static orbit -> the static3d video model -> 4D construction.

:mod:`.config` holds the settings, :mod:`.routes` the image / text stages, :mod:`.animate` the
static-3D stages.
"""

from gen4d.pipeline.config import RouteConfig

__all__ = ["RouteConfig"]
