"""The model bundle around the denoiser, loading and saving (codecs and CLIP encoders:
:mod:`.encoders`; the stored description :class:`VDMSpec`: :mod:`.spec`).

A :class:`VideoModel` bundles what sampling and training need: the fine-tuned UNet (with its motion
embedding), the frozen 3D-aware base UNet of eq. 3 (or None when the two share weights), the noise
schedule, a latent codec (a diffusers VAE or :class:`PixelCodec` for small pixel-space models), the
optional CLIP text / image encoders, and its :class:`VDMSpec` (stored as ``model.json``).

Sources (see :func:`load_video_model`):

* a gen4d model folder (``model.json`` + ``unet.safetensors`` [+ ``base_unet.safetensors``]), as
  written by ``gen4d train-vdm`` and :func:`save_video_model`;
* a diffusers model folder or hub id laid out like ``ali-vilab/i2vgen-xl`` (unet, vae, scheduler,
  text_encoder, tokenizer, image_encoder, feature_extractor) or ``damo-vilab/text-to-video-ms-1.7b``
  (unet, vae, scheduler, text_encoder, tokenizer): the base model, optionally with fine-tuned UNet
  weights from a safetensors file (``weights=``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gen4d.config import from_dict, to_dict
from gen4d.diffusion.schedule import NoiseSchedule
from gen4d.diffusion.vdm.camera import add_camera_embedding
from gen4d.diffusion.vdm.encoders import ImageEncoder, PixelCodec, TextEncoder, VAECodec, composite_white
from gen4d.diffusion.vdm.model import (
    DIFFUSION_HINT,
    UNET_CLASSES,
    _diffusers,
    add_motion_embedding,
    build_unet,
    check_variant,
    has_motion_embedding,
    limit_attention_batch,
)
from gen4d.diffusion.vdm.spec import VDMSpec, orbit_cameras, orbit_record
from gen4d.io import atomic_path, read_json, write_json

__all__ = [
    "VDMSpec",
    "PixelCodec",
    "VAECodec",
    "TextEncoder",
    "ImageEncoder",
    "VideoModel",
    "load_video_model",
    "save_video_model",
    "load_unet_weights",
    "MODEL_FILE",
    "UNET_FILE",
    "BASE_UNET_FILE",
    "composite_white",
    "orbit_cameras",
    "orbit_record",
]

MODEL_FILE = "model.json"
UNET_FILE = "unet.safetensors"
BASE_UNET_FILE = "base_unet.safetensors"


# ---------------------------------------------------------------------------------------------- bundle


@dataclass
class VideoModel:
    """Everything sampling needs (see the module docstring)."""

    spec: VDMSpec
    unet: nn.Module
    base_unet: nn.Module | None
    schedule: NoiseSchedule
    codec: Any
    text_encoder: TextEncoder | None = None
    image_encoder: ImageEncoder | None = None
    source: str = ""
    """Where the model was loaded from (for reports)."""

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_size(self) -> int:
        return self.spec.size // self.codec.downsample

    def null_text(self) -> torch.Tensor | None:
        """(1, L, D) tokens of the empty prompt, or None without a text encoder."""
        if self.text_encoder is None:
            return None
        return self.text_encoder([""])


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def _from_pretrained(cls: Any, source: str, subfolder: str, what: str, **kwargs):
    from gen4d.metrics.weights import resolve_hub_model

    source = resolve_hub_model(str(source), f"the {what} of")  # offline: the cached copy, or how to get it
    try:
        return cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"could not load the {what} from {source!r} (subfolder {subfolder!r}): {str(err).splitlines()[0]}. "
            "Provide a local diffusers folder with that subfolder, or a hub id with network access / a filled "
            "Hugging Face cache (e.g. ali-vilab/i2vgen-xl, damo-vilab/text-to-video-ms-1.7b)."
        ) from err


def _load_unet(cls: Any, source: str) -> nn.Module:
    """A pretrained diffusers UNet (``source``/unet) with its attention sliced over the batch."""
    return limit_attention_batch(_from_pretrained(cls, source, "unet", "UNet"))


def _check_source(source: str) -> None:
    if not _is_local(source) and not _looks_like_hub_id(source):
        raise FileNotFoundError(
            f"no model at {source!r}: pass a gen4d model folder (with {MODEL_FILE}), a diffusers model folder "
            "(unet/, vae/, scheduler/ ...) or a hub id such as ali-vilab/i2vgen-xl"
        )


def load_unet_weights(unet: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load a safetensors state dict into ``unet`` with a clear error for a missing file or bad keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no such weights file: {path}; pass the fine-tuned UNet weights written by `gen4d train-vdm` "
            f"(<run>/model/{UNET_FILE}) or a checkpoint's ema.safetensors"
        )
    from safetensors.torch import load_file

    state = load_file(str(path), device="cpu")
    result = unet.load_state_dict(state, strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise ValueError(
            f"{path}: weights do not fit this UNet ({len(result.missing_keys)} missing keys, e.g. "
            f"{result.missing_keys[:3]}; {len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:3]}); "
            "were they trained for another variant or architecture?"
        )


def _load_components(spec: VDMSpec, source: str | None, device, dtype, encoders: bool = True):
    """Codec, text and image encoders from the base folder / hub id (as far as the spec needs them)."""
    codec = PixelCodec() if spec.codec == "pixel" else None
    text_encoder = image_encoder = None
    if source is None:
        if codec is None:
            raise FileNotFoundError(
                "this model works in a VAE latent space but names no base model to load the VAE "
                "from; set `base` in model.json or pass --base"
            )
        return codec, None, None
    _check_source(source)
    diffusers = _diffusers()
    if codec is None:
        vae = _from_pretrained(diffusers.AutoencoderKL, source, "vae", "VAE", torch_dtype=dtype).to(device).eval()
        codec = VAECodec(vae)
    if not encoders:
        return codec, None, None
    try:
        import transformers
    except ImportError as err:  # pragma: no cover
        raise ImportError(f"the CLIP encoders need transformers: {DIFFUSION_HINT}") from err
    root = Path(source)
    local = _is_local(source)
    if not local or (root / "text_encoder").is_dir():
        model = _from_pretrained(
            transformers.CLIPTextModel, source, "text_encoder", "CLIP text encoder", torch_dtype=dtype
        )
        tok = _from_pretrained(transformers.CLIPTokenizer, source, "tokenizer", "CLIP tokenizer")
        # I2VGen-XL (image / static variants) was trained on penultimate-layer features (clip_skip=1).
        skip = 0 if spec.variant == "text" else 1
        text_encoder = TextEncoder(model.to(device).eval(), tok, skip_layers=skip)
    if spec.variant != "text" and (not local or (root / "image_encoder").is_dir()):
        model = _from_pretrained(
            transformers.CLIPVisionModelWithProjection, source, "image_encoder", "CLIP image encoder", torch_dtype=dtype
        )
        kwargs = {}
        if local and (root / "feature_extractor" / "preprocessor_config.json").is_file():
            pre = read_json(root / "feature_extractor" / "preprocessor_config.json")
            crop = pre.get("crop_size", 224)
            kwargs = dict(
                size=crop["height"] if isinstance(crop, dict) else int(crop),
                mean=pre.get("image_mean", (0.48145466, 0.4578275, 0.40821073)),
                std=pre.get("image_std", (0.26862954, 0.26130258, 0.27577711)),
            )
        image_encoder = ImageEncoder(model.to(device).eval(), **kwargs)
    return codec, text_encoder, image_encoder


def _to(module: nn.Module, device, dtype) -> nn.Module:
    module = module.to(device)
    if next(module.parameters()).dtype != dtype:  # casting to the same dtype makes diffusers warn
        module = module.to(dtype=dtype)
    return module


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


def load_video_model(
    source: str | Path,
    weights: str | Path | None = None,
    variant: str | None = None,
    base: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    encoders: bool = True,
) -> VideoModel:
    """Load a video model for sampling (see the module docstring for ``source``).

    weights: fine-tuned UNet safetensors (for a diffusers base source; a gen4d model folder has its
    own). variant: for a diffusers source (default: 'image' if it has an image encoder, else 'text').
    base: overrides the spec's base source (where the VAE / encoders / base UNet come from).
    encoders: load the CLIP encoders (False for latent-only use).
    """
    source = str(source)
    folder = Path(source).expanduser()
    if (folder / MODEL_FILE).is_file():
        spec = from_dict(VDMSpec, read_json(folder / MODEL_FILE), strict=False).validate()
        if base is not None:
            spec.base = base
        if variant is not None and variant != spec.variant:
            raise ValueError(f"{folder} holds a {spec.variant!r} model, not {variant!r}")
        cls = getattr(_diffusers(), UNET_CLASSES[spec.variant])
        if spec.unet_config:
            unet = build_unet(spec.variant, spec.unet_config)
        else:
            _check_source(spec.base or "")
            unet = _load_unet(cls, spec.base)
        if spec.camera_dim:
            add_camera_embedding(unet, spec.camera_dim)
        base_unet = None
        if (folder / BASE_UNET_FILE).is_file():
            base_unet = copy.deepcopy(unet)
            load_unet_weights(base_unet, folder / BASE_UNET_FILE)
        elif spec.base:  # the frozen pretrained 3D-aware model of eq. 3
            base_unet = copy.deepcopy(unet) if not spec.unet_config else _load_unet(cls, spec.base)
        add_motion_embedding(unet, spec.motion_freq_dim, spec.motion_scale)
        load_unet_weights(unet, Path(weights) if weights else folder / UNET_FILE)
        codec, text_encoder, image_encoder = _load_components(spec, spec.base, device, dtype, encoders)
    else:
        _check_source(source)
        if base is not None and base != source:
            raise ValueError("pass either a diffusers source or base, not both")
        diffusers = _diffusers()
        if variant is None:
            variant = "image" if not _is_local(source) or (folder / "image_encoder").is_dir() else "text"
        check_variant(variant)
        cls = getattr(diffusers, UNET_CLASSES[variant])
        unet = _load_unet(cls, source)
        scheduler = _from_pretrained(diffusers.DDIMScheduler, source, "scheduler", "scheduler config")
        spec = VDMSpec(
            variant=variant,
            scheduler=dict(scheduler.config),
            codec="vae",
            base=source,
            base_null_condition="keep_latents" if variant != "text" else "drop_all",
        ).validate()
        base_unet = None
        if weights is not None:
            base_unet = copy.deepcopy(unet)
        add_motion_embedding(unet, spec.motion_freq_dim, spec.motion_scale)
        if weights is not None:
            load_unet_weights(unet, weights)
        codec, text_encoder, image_encoder = _load_components(spec, source, device, dtype, encoders)
    unet = _freeze(_to(unet, device, dtype))
    if base_unet is not None:
        base_unet = _freeze(_to(base_unet, device, dtype))
    schedule = NoiseSchedule.from_diffusers_config(spec.scheduler)
    return VideoModel(
        spec=spec,
        unet=unet,
        base_unet=base_unet,
        schedule=schedule,
        codec=codec,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        source=source,
    )


def save_video_model(folder: str | Path, spec: VDMSpec, unet: nn.Module, base_unet: nn.Module | None = None) -> Path:
    """Write a gen4d model folder: model.json, unet.safetensors [, base_unet.safetensors] (atomic)."""
    from safetensors.torch import save_file

    if not has_motion_embedding(unet):
        raise ValueError("save_video_model: the UNet has no motion embedding (use add_motion_embedding first)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec.validate()
    if not spec.unet_config:
        spec.unet_config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    for name, module in ((UNET_FILE, unet), (BASE_UNET_FILE, base_unet)):
        if module is None:
            continue
        state = {
            k: v.detach().cpu().contiguous()
            for k, v in module.state_dict().items()
            if module is unet or ".motion." not in k
        }  # the base model takes no motion
        with atomic_path(folder / name) as tmp:
            save_file(state, str(tmp), metadata={"format": "gen4d.vdm", "variant": spec.variant})
    write_json(folder / MODEL_FILE, json.loads(json.dumps(to_dict(spec), default=_jsonable)))
    return folder


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
