"""The parts around the denoiser: latent codecs, CLIP encoders, the model bundle, loading and saving.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gen4d._checks import check_shape
from gen4d.config import from_dict, to_dict
from gen4d.diffusion.schedule import NoiseSchedule
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
from gen4d.diffusion.vdm.presets import SCHEDULE_PRESETS
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
]

MODEL_FILE = "model.json"
UNET_FILE = "unet.safetensors"
BASE_UNET_FILE = "base_unet.safetensors"


@dataclass
class VDMSpec:
    """How a Diffusion4D video model is built and used (stored as model.json next to its weights)."""

    variant: str = "image"
    """Condition type: image or static3d (I2VGen-XL architecture) or text (ModelScope T2V architecture)."""
    unet_config: dict = field(default_factory=dict)
    """diffusers constructor arguments of the UNet (empty: the base model's own config)."""
    scheduler: dict = field(default_factory=lambda: dict(SCHEDULE_PRESETS["stable_diffusion"]))
    """diffusers scheduler config of the noise schedule the model was trained with."""
    codec: str = "vae"
    """Latent space: 'vae' (the base model's AutoencoderKL) or 'pixel' (RGBA pixels, 4 channels)."""
    base: str | None = None
    """diffusers folder or hub id providing the base weights, the VAE and the CLIP encoders (None: none)."""
    num_frames: int = 24
    """Frames (orbit views) per video T."""
    size: int = 256
    """Image side in pixels (square videos)."""
    fps: int = 16
    """I2VGen-XL's fps micro-condition (a constant here)."""
    motion_freq_dim: int = 256
    """Size of the sinusoidal features of the motion magnitude."""
    motion_scale: float = 1000.0
    """m is multiplied by this before the sinusoid (m is a mean squared difference, typically < 0.1)."""
    null_condition: str = "drop_all"
    """Unconditional input of guidance and of training's condition dropout: 'drop_all' (eq. 3's eps(z, t))
    or 'keep_latents' (I2VGen-XL's pipeline: concatenated latents kept)."""
    base_null_condition: str = "keep_latents"
    """The same for the 3D-aware base model when it generates the static orbit."""
    motion_stats: dict = field(default_factory=dict)
    """Motion magnitudes m(V) of the training set (min, quantiles, max), to choose m at sampling."""
    orbit_cameras: dict = field(default_factory=dict)
    """Cameras of the training orbits (world_to_camera, fx, fy, cx, cy, width, height); empty: Diffusion4D's orbit."""
    notes: str = ""
    """Free text: how the weights were made."""

    def validate(self) -> VDMSpec:
        check_variant(self.variant)
        if self.codec not in ("vae", "pixel"):
            raise ValueError(f"unknown codec {self.codec!r}; expected 'vae' or 'pixel'")
        for name in ("null_condition", "base_null_condition"):
            if getattr(self, name) not in ("drop_all", "keep_latents"):
                raise ValueError(f"{name} must be 'drop_all' or 'keep_latents', got {getattr(self, name)!r}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        return self


# --------------------------------------------------------------------------------------------- codecs


def _check_rgba_video(name: str, video: torch.Tensor) -> None:
    check_shape(name, video, ("B", "T", "H", "W", None))
    if video.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: expected 3 (RGB) or 4 (RGBA) channels last, got {video.shape[-1]}")


def composite_white(video: torch.Tensor) -> torch.Tensor:
    """(..., 3|4) colour in [0, 1] -> (..., 3) over a white background."""
    if video.shape[-1] == 3:
        return video
    rgb, alpha = video[..., :3], video[..., 3:4]
    return rgb * alpha + (1 - alpha)


class PixelCodec:
    """Pixel space as 'latents': RGB composited on white and alpha, mapped to [-1, 1] (4 channels).
    For small models trained from scratch; needs RGBA inputs, and decodes alpha too."""

    channels = 4
    downsample = 1
    kind = "pixel"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 4) RGBA in [0, 1] -> (B, 4, T, H, W)."""
        _check_rgba_video("video", video)
        if video.shape[-1] != 4:
            raise ValueError(
                "the pixel-space model needs RGBA input (an alpha channel / transparent background); "
                "got RGB. Cut the object out first (e.g. with a matting tool)."
            )
        rgb = composite_white(video)
        x = torch.cat([rgb, video[..., 3:4]], dim=-1) * 2 - 1
        return x.permute(0, 4, 1, 2, 3).contiguous()

    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 4, T, H, W) -> colour (B, T, H, W, 3) (not premultiplied) and alpha (B, T, H, W, 1)."""
        check_shape("latents", latents, ("B", 4, "T", "H", "W"))
        y = ((latents.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)
        white, alpha = y[..., :3], y[..., 3:4]
        # white = rgb * a + (1 - a)  =>  rgb = (white - 1 + a) / a where a is not ~0
        rgb = torch.where(alpha > 1e-3, (white - 1 + alpha) / alpha.clamp_min(1e-3), white).clamp(0, 1)
        return rgb, alpha


class VAECodec:
    """A diffusers ``AutoencoderKL`` applied frame by frame on RGB composited on white. Decoding gives
    no alpha (None). Encoding uses the posterior mean (deterministic, so latents can be cached)."""

    channels = 4
    kind = "vae"

    def __init__(self, vae: nn.Module, chunk: int = 8):
        self.vae = vae
        self.chunk = int(chunk)
        self.scaling = float(vae.config.scaling_factor)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        if int(vae.config.latent_channels) != 4:
            raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels; I2VGen-XL / ModelScope need 4")

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_rgba_video("video", video)
        batch, frames = video.shape[:2]
        param = next(self.vae.parameters())
        x = (composite_white(video) * 2 - 1).flatten(0, 1).permute(0, 3, 1, 2).to(param)
        parts = [self.vae.encode(x[i : i + self.chunk]).latent_dist.mean for i in range(0, x.shape[0], self.chunk)]
        z = torch.cat(parts) * self.scaling
        return z.reshape(batch, frames, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, None]:
        check_shape("latents", latents, ("B", 4, "T", "h", "w"))
        batch, _, frames = latents.shape[:3]
        param = next(self.vae.parameters())
        z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1).to(param) / self.scaling
        parts = [self.vae.decode(z[i : i + self.chunk]).sample for i in range(0, z.shape[0], self.chunk)]
        x = ((torch.cat(parts).float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
        return x.reshape(batch, frames, *x.shape[1:]), None


# ------------------------------------------------------------------------------------------- encoders


class TextEncoder:
    """CLIP text encoder + tokenizer: prompts -> (B, 77, D) hidden states.

    ``skip_layers`` follows diffusers' ``clip_skip``: 0 gives the last layer's states (ModelScope's
    ``TextToVideoSDPipeline``); 1 gives the penultimate layer's states through the model's final
    layer norm, which is what ``I2VGenXLPipeline`` feeds I2VGen-XL (its ``clip_skip`` defaults to 1)."""

    def __init__(self, model: nn.Module, tokenizer: Any, skip_layers: int = 0):
        if skip_layers < 0:
            raise ValueError(f"TextEncoder: skip_layers must be >= 0, got {skip_layers}")
        self.model = model
        self.tokenizer = tokenizer
        self.skip_layers = int(skip_layers)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        param = next(self.model.parameters())
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tokens.input_ids.to(param.device)
        if not self.skip_layers:
            return self.model(ids)[0]
        hidden = self.model(ids, output_hidden_states=True).hidden_states[-(self.skip_layers + 1)]
        # transformers < 5 nests the layers under .text_model; 5 keeps them on the model itself.
        return getattr(self.model, "text_model", self.model).final_layer_norm(hidden)


class ImageEncoder:
    """CLIP vision model with projection: (B, H, W, 3) images in [0, 1] -> (B, D) image embeddings.
    Preprocessing (resize, CLIP mean / std) is done here in torch, without the processor class."""

    def __init__(
        self,
        model: nn.Module,
        size: int = 224,
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
    ):
        self.model = model
        self.size = int(size)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_shape("images", images, ("B", "H", "W", 3))
        param = next(self.model.parameters())
        x = images.permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True
        ).clamp(0, 1)
        x = ((x - self.mean.to(x)) / self.std.to(x)).to(param)
        return self.model(pixel_values=x).image_embeds


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


def _orbit_record(cameras) -> dict:
    return {
        "world_to_camera": cameras.world_to_camera.tolist(),
        "fx": cameras.fx.tolist(),
        "fy": cameras.fy.tolist(),
        "cx": cameras.cx.tolist(),
        "cy": cameras.cy.tolist(),
        "width": cameras.width,
        "height": cameras.height,
    }


def orbit_cameras(spec: VDMSpec):
    """The T orbit cameras of generated videos (times i / (T - 1)): the training orbit when recorded,
    else Diffusion4D's orbit (elevation 0, radius 2, fov 39.6 deg)."""
    from gen4d.cameras import Cameras, diffusion4d_orbit

    count = spec.num_frames
    times = torch.linspace(0, 1, count)
    record = spec.orbit_cameras
    if not record:
        return diffusion4d_orbit(count, size=spec.size).with_times(times)
    cams = Cameras(
        world_to_camera=torch.tensor(record["world_to_camera"], dtype=torch.float32),
        fx=torch.tensor(record["fx"]),
        fy=torch.tensor(record["fy"]),
        cx=torch.tensor(record["cx"]),
        cy=torch.tensor(record["cy"]),
        width=int(record["width"]),
        height=int(record["height"]),
        times=times,
    )
    if len(cams) != count:
        raise ValueError(f"model.json records {len(cams)} orbit cameras for {count} frames")
    return cams.resized(spec.size, spec.size)


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
