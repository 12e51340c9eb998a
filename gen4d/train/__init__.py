"""Training of gen4d's models: the Diffusion4D video model (:mod:`gen4d.train.vdm`) with its
data pipeline (:mod:`.data`) and EMA (:mod:`.ema`); the loop and checkpoints are the run engine's (:mod:`gen4d.run`).
Importing this package is cheap; accelerate / diffusers load when training starts."""

from gen4d.train.config import TRAIN_PRESETS, DataConfig, ModelConfig, OptimConfig, TrainConfig

__all__ = ["TRAIN_PRESETS", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "train_vdm"]


def train_vdm(config: TrainConfig, progress: bool = True):
    """See :func:`gen4d.train.vdm.train_vdm`."""
    from gen4d.train.vdm import train_vdm as run

    return run(config, progress=progress)
