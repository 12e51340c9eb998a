"""Diffusion4D's 4D-aware video diffusion model (paper section 3.3).

* :mod:`.motion` - latent motion magnitude m(z), L_mr, the motion-magnitude embedding;
* :mod:`.model` - the denoiser (diffusers I2VGenXLUNet / UNet3DConditionModel + motion embedding),
  :class:`VideoCondition`, :func:`predict`;
* :mod:`.sampling` - eq. 3's 3D-aware classifier-free guidance and DDIM;
* :mod:`.encoders` - codecs (VAE / pixel), CLIP encoders; :mod:`.spec` - :class:`VDMSpec` (model.json);
* :mod:`.components` - :class:`VideoModel`, load / save;
* :mod:`.pipeline` - condition -> orbital video (+ static orbit) -> gen4d dataset;
* :mod:`.presets` - UNet / schedule presets (tiny, small, full).

diffusers and transformers are imported only when a model is built or loaded
(``pip install 'gen4d[diffusion]'``). Training lives in :mod:`gen4d.train`.
"""

from gen4d.diffusion.vdm.model import (
    VARIANTS,
    VideoCondition,
    add_motion_embedding,
    build_unet,
    has_motion_embedding,
    image_condition_latents,
    null_condition,
    predict,
)
from gen4d.diffusion.vdm.motion import (
    MotionEmbedding,
    latent_motion_magnitude,
    motion_reconstruction_loss,
    sinusoidal_embedding,
)
from gen4d.diffusion.vdm.sampling import combine_guidance, ddim_sample, guided_output

__all__ = [
    "VARIANTS",
    "VideoCondition",
    "add_motion_embedding",
    "build_unet",
    "has_motion_embedding",
    "image_condition_latents",
    "null_condition",
    "predict",
    "MotionEmbedding",
    "latent_motion_magnitude",
    "motion_reconstruction_loss",
    "sinusoidal_embedding",
    "combine_guidance",
    "ddim_sample",
    "guided_output",
]
