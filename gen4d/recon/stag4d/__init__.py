"""STAG4D: video -> 4D Gaussians (Zeng et al. 2024), from the paper and FACTS.md section 1.

Pipeline (:func:`run_video_to_4d`):

1. **Input**: a video / frame folder, preprocessed by :mod:`gen4d.data.video_input` (one crop
   for all frames, RGBA), seen by a reference camera at elevation 0, azimuth 0, radius 2, fovy
   49.1 deg; or a gen4d dataset folder, whose ``front`` split (with its own cameras and times)
   is the input video.
2. **Anchored multi-views**: six Zero123++ views per frame with the temporal anchor
   (:mod:`gen4d.diffusion.zero123pp`), cached in ``RUN/multiview``; or ground-truth renders of the
   dataset's ``zero123pp`` split ("oracle" mode); or none.
3. **4D optimisation** (:func:`optimise`, a :class:`gen4d.run.Task` on the run engine): canonical Gaussians (10k in a ball of radius 0.5,
   opacity 0.1, SH 0) + a HexPlane field bypassed for the first ``static_steps``; per step:

   * the reference view at each of the step's ``views_per_step`` frames (as the public code's
     batch of 4): ``r * (20000 MSE(rgb) + 5000 MSE(alpha))`` on white per frame, summed over
     the frames, ``r`` ramping 0 -> 1 over ``ramp_steps``;
   * ``views_per_step`` random views (elevation [-30, 30), azimuth [-180, 180), the reference
     radius and field of view, 128 / 256 / 512 px as training progresses, black background with
     probability 0.5), one at each of the step's frames, all rendered in one call, scored by
     Zero-1-to-3 SDS (CFG 5, w = 1 - alphabar, annealed t range) conditioned on the input frame
     when |azimuth| < 30 deg or with probability 0.6, else on the same frame's anchored view
     nearest in azimuth (pose taken relative to it);
   * optionally a photometric loss on the anchored views (the paper's intent; the public code
     used them only as SDS conditions) - off in the ``stag4d`` preset, on in ``fast``;
   * HexPlane regularisers (plane TV 0.05, time smoothness 5, time-plane L1 0.05, in the form of
     STAG4D's code: second differences along the plane rows, summed over scales and planes) and an
     anisotropy regulariser on the *scales* (the public code applied it to log-scales, where it is
     always zero);
   * adaptive densification from the 2D-mean gradients of every render of the step, threshold
     at the top 2.5 % (``gen4d.densify`` percentile mode), no opacity reset.

4. **Outputs**: ``videos/front.mp4``, ``back.mp4``, ``round.mp4`` (+ gifs), ``ply/frame_XXXX.ply``,
   ``checkpoint/`` (model + training state, ``--resume``), ``frames/`` (the preprocessed input),
   ``multiview/`` (generated grids), ``metrics.json`` (per-stage times, peak memory, held-out
   PSNR / SSIM when the input dataset has an ``eval`` split), ``config.json``, ``log.txt``.

Known defects of the public code not copied: anomaly detection every step (off here), the scale
regulariser on log-scales (fixed), resuming without the deformation (the checkpoint holds the
field), a hard-coded cache path (the anchor takes an explicit context; see
:mod:`gen4d.diffusion.anchor`).

Modules: :mod:`.config` (configs, presets), :mod:`.conditions` (camera geometry, SDS conditions),
:mod:`.optimise` (the optimisation task), :mod:`.pipeline` (input, multi-views, outputs).
"""

from gen4d.recon.stag4d.conditions import load_guidance, spherical
from gen4d.recon.stag4d.config import PRESETS, RandomViews, SDSConfig, Stag4DConfig, Stag4DLoss, Stag4DOutput, preset
from gen4d.recon.stag4d.optimise import Stag4DTask, optimise, reference_losses, render_size
from gen4d.recon.stag4d.pipeline import load_multiview_model, run_video_to_4d

_render_size = render_size  # the name the tests knew

__all__ = [
    "PRESETS",
    "RandomViews",
    "SDSConfig",
    "Stag4DConfig",
    "Stag4DLoss",
    "Stag4DOutput",
    "Stag4DTask",
    "load_guidance",
    "load_multiview_model",
    "optimise",
    "preset",
    "reference_losses",
    "render_size",
    "run_video_to_4d",
    "spherical",
]
