"""Zero123++ multi-view generation with STAG4D's temporal anchor, built on diffusers components.

Zero123++ (Shi et al. 2023) turns one image into a 3 x 2 grid of views (row-major: relative
azimuths 30, 90, 150, 210, 270, 330 degrees; elevations 30 / -20 (v1.1) or 20 / -10 (v1.2)).
The model is an SD2-style ``UNet2DConditionModel`` conditioned three ways, all reproduced here:

* reference-only attention: the condition image's VAE latent (unscaled, ``latent_dist.sample``),
  noised to the current step, is run through the UNet first; every self-attention layer then
  attends to ``[own tokens ; condition tokens]`` (:mod:`gen4d.diffusion.anchor`);
* global conditioning: the empty prompt's CLIP text embedding plus the CLIP image embedding
  times 77 per-token "ramping" coefficients (``model_index.json``);
* classifier-free guidance 4: the unconditional half uses the plain empty-prompt embedding and
  the latent of an all-zero (grey) condition image.

Latents live in Zero123++'s scaled space: ``decode(unscale(z) / scaling_factor)`` with
``unscale(z) = z / 0.75 + 0.22`` and the decoded image multiplied by 0.8 / 0.5. Sampling uses
diffusers' EulerAncestral scheduler with ``timestep_spacing="trailing"``.

STAG4D specifics: 75 steps, CFG 4, the condition composited on grey (127), every frame sampled
from the same seed, and the temporal anchor (frame 0's self-attention inputs fused into every
later frame; :class:`MultiViewConfig.anchor_weight`). Each frame draws its noise from its own
generator seeded identically, so a frame's result does not depend on which frames share its
batch - that is what lets the anchor frame be recomputed inside each batch (anchor mode
"batch", no cache) instead of caching ~8 GB of its activations (mode "cache").

Weights: ``sudo-ai/zero123plus-v1.1`` / ``-v1.2`` from a local folder (diffusers layout:
``unet/ vae/ text_encoder/ tokenizer/ vision_encoder/ scheduler/ feature_extractor_*/
model_index.json``) or a hub id (downloaded with huggingface_hub when online). Tested here only
with random weights (tiny and full-size architectures); not validated against real weights.
"""

from gen4d.diffusion.zero123pp.cache import generate_multiview_cached, load_cached_multiview, multiview_key
from gen4d.diffusion.zero123pp.conditioning import CLIP_MEAN, CLIP_STD, ImagePrep
from gen4d.diffusion.zero123pp.loading import (
    DIFFUSION_HINT,
    FULL_TEXT,
    FULL_UNET,
    FULL_VISION,
    SCHEDULER,
    SD_VAE,
    TINY_TEXT,
    TINY_UNET,
    TINY_VAE,
    TINY_VISION,
)
from gen4d.diffusion.zero123pp.pipeline import MultiViewConfig, Zero123Plus
from gen4d.diffusion.zero123pp.views import GREY, composite, join_grid, split_grid, view_cameras

# Modules: views (grid, background, cameras), conditioning (image preprocessing and condition
# inputs), loading (install hint, architectures, weights folder), pipeline (Zero123Plus, the
# sampler), cache (generated views on disk).
__all__ = [
    "DIFFUSION_HINT",
    "MultiViewConfig",
    "ImagePrep",
    "Zero123Plus",
    "split_grid",
    "join_grid",
    "composite",
    "view_cameras",
    "multiview_key",
    "generate_multiview_cached",
    "load_cached_multiview",
    "GREY",
    "CLIP_MEAN",
    "CLIP_STD",
    "FULL_UNET",
    "SD_VAE",
    "FULL_TEXT",
    "FULL_VISION",
    "SCHEDULER",
    "TINY_UNET",
    "TINY_VAE",
    "TINY_TEXT",
    "TINY_VISION",
]
