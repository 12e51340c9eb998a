"""VideoMV / VGen checkpoints -> gen4d's video UNet (diffusers ``I2VGenXLUNet`` + camera embedding).

VideoMV (the 3D-aware base model of Diffusion4D) is a fine-tuned I2VGen-XL trained with VGen's
code base; its checkpoints (``{'state_dict': ..., 'step': ...}`` torch pickles) use VGen's own
module tree (``UNetSD_I2VGen``), not diffusers'. The layout, read from VGen / VideoMV's model
definition (module names and how they nest), maps onto diffusers' ``I2VGenXLUNet`` one tensor at a
time:

=========================================  ==================================================
VGen                                       gen4d (diffusers)
=========================================  ==================================================
``time_embed.{0,2}``                       ``time_embedding.linear_{1,2}``
``fps_embedding.*``, ``context_embedding.*``  the same names
``camera_embedding.{0,2}`` (VideoMV)       ``camera_embedding.linear_{1,2}`` (:mod:`.camera`)
``local_image_concat.*``                   ``image_latents_proj_in.*``
``local_image_embedding.*``                ``image_latents_context_embedding.*``
``local_temporal_encoder.layers.0.*``      ``image_latents_temporal_encoder.*`` (fused q/k/v split)
``input_blocks.0.{0,1}``                   ``conv_in``, ``transformer_in``
``input_blocks.k`` = [ResBlock, spatial,   ``down_blocks.i.{resnets,temp_convs,attentions,``
temporal transformer] or a Downsample      ``temp_attentions}.j``, ``downsamplers.0.conv``
``middle_block.{0,1,2,3}``                 ``mid_block.{resnets.0, attentions.0, temp_attentions.0, resnets.1}``
``output_blocks.k`` (+ Upsample)           ``up_blocks.i.*.j``, ``upsamplers.0.conv``
``out.{0,2}``                              ``conv_norm_out``, ``conv_out``
=========================================  ==================================================

Inside a ResBlock: ``in_layers.{0,2}`` = ``norm1, conv1``, ``emb_layers.1`` = ``time_emb_proj``,
``out_layers.{0,3}`` = ``norm2, conv2``, ``skip_connection`` = ``conv_shortcut``, and its temporal
convolution ``temopral_conv.*`` (sic) is diffusers' ``temp_convs.j.*``. VGen's temporal
transformers project with 1x1 ``Conv1d`` (weights ``(out, in, 1)``) where diffusers uses ``Linear``.

The rules are generated from the gen4d UNet's own structure (:func:`key_rules`), so both
directions (:func:`vgen_to_gen4d`, :func:`gen4d_to_vgen`) use one table. The UNet's constructor
arguments are inferred from the checkpoint's shapes (:func:`infer_unet_config`); VGen's GroupNorms
always have 32 groups. VideoMV's optional LGM refiner (``lgm_big.*``) is not part of the video
model and is dropped (counted in the report). Not tested on the released weights (none here).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gen4d.errors import UserError

__all__ = [
    "KeyRule",
    "key_rules",
    "infer_unet_config",
    "load_vgen_state_dict",
    "vgen_to_gen4d",
    "gen4d_to_vgen",
    "convert_videomv",
    "DROPPED_PREFIXES",
]

DROPPED_PREFIXES = ("lgm_big.",)
"""VGen checkpoint keys that are not part of the video UNet (VideoMV's LGM refiner)."""

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TEMPORAL_ENCODER = {
    "norm1": "layers.0.0.norm",
    "attn1.to_out.0": "layers.0.0.fn.to_out.0",
    "ff.net.0.proj": "layers.0.1.net.0.0",
    "ff.net.2": "layers.0.1.net.2",
}
_SINGLES = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "camera_embedding.linear_1": "camera_embedding.0",
    "camera_embedding.linear_2": "camera_embedding.2",
    "fps_embedding": "fps_embedding",
    "context_embedding": "context_embedding",
    "image_latents_proj_in": "local_image_concat",
    "image_latents_context_embedding": "local_image_embedding",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


@dataclass(frozen=True)
class KeyRule:
    """One VGen tensor and the gen4d tensor(s) it becomes."""

    vgen: str
    """Key in the VGen state dict."""
    gen4d: tuple[str, ...]
    """Key(s) in gen4d's state dict (three for a fused q/k/v projection)."""
    kind: Literal["copy", "conv1d", "qkv"]
    """copy: same tensor; conv1d: VGen's (out, in, 1) Conv1d = gen4d's (out, in) Linear; qkv: VGen's
    fused (3 * inner, dim) projection = gen4d's to_q, to_k, to_v stacked."""


def _prefixes(config: Mapping) -> dict[str, tuple[str, str]]:
    """gen4d module prefix -> (VGen prefix, kind of module) for the down / mid / up blocks."""
    levels = len(config["block_out_channels"])
    layers = int(config["layers_per_block"])
    out: dict[str, tuple[str, str]] = {"transformer_in": ("input_blocks.0.1", "temporal")}

    def unit(gen4d_block: str, j: int, vgen: str, attention: bool) -> None:
        out[f"{gen4d_block}.resnets.{j}"] = (f"{vgen}.0", "resnet")
        out[f"{gen4d_block}.temp_convs.{j}"] = (f"{vgen}.0.temopral_conv", "copy")
        if attention:
            out[f"{gen4d_block}.attentions.{j}"] = (f"{vgen}.1", "copy")
            out[f"{gen4d_block}.temp_attentions.{j}"] = (f"{vgen}.2", "temporal")

    k = 1
    for i, kind in enumerate(config["down_block_types"]):
        attention = kind.startswith("CrossAttn")
        for j in range(layers):
            unit(f"down_blocks.{i}", j, f"input_blocks.{k}", attention)
            k += 1
        if i != levels - 1:
            out[f"down_blocks.{i}.downsamplers.0.conv"] = (f"input_blocks.{k}.op", "copy")
            k += 1
    out["mid_block.resnets.0"] = ("middle_block.0", "resnet")
    out["mid_block.temp_convs.0"] = ("middle_block.0.temopral_conv", "copy")
    out["mid_block.attentions.0"] = ("middle_block.1", "copy")
    out["mid_block.temp_attentions.0"] = ("middle_block.2", "temporal")
    out["mid_block.resnets.1"] = ("middle_block.3", "resnet")
    out["mid_block.temp_convs.1"] = ("middle_block.3.temopral_conv", "copy")
    k = 0
    for i, kind in enumerate(config["up_block_types"]):
        attention = kind.startswith("CrossAttn")
        for j in range(layers + 1):
            unit(f"up_blocks.{i}", j, f"output_blocks.{k}", attention)
            if i != levels - 1 and j == layers:
                out[f"up_blocks.{i}.upsamplers.0.conv"] = (f"output_blocks.{k}.{3 if attention else 1}.conv", "copy")
            k += 1
    return out


def key_rules(unet: nn.Module) -> list[KeyRule]:
    """The VGen counterpart of every tensor of gen4d's ``I2VGenXLUNet`` ``unet`` (with or without a
    camera embedding; the motion embedding, which VGen lacks, is left out)."""
    config = dict(unet.config)
    prefixes = _prefixes(config)
    rules: list[KeyRule] = []
    qkv: dict[str, dict[str, str]] = {}
    for key in unet.state_dict():
        if key.startswith("time_embedding.motion."):
            continue
        module, _, param = key.rpartition(".")
        if module.startswith("image_latents_temporal_encoder."):
            inner = module.removeprefix("image_latents_temporal_encoder.")
            match = re.fullmatch(r"attn1\.to_([qkv])", inner)
            if match:
                qkv.setdefault(param, {})[match.group(1)] = key
                continue
            if inner not in _TEMPORAL_ENCODER:
                raise ValueError(f"no VGen counterpart for {key}")
            rules.append(KeyRule(f"local_temporal_encoder.{_TEMPORAL_ENCODER[inner]}.{param}", (key,), "copy"))
            continue
        single = next((s for s in _SINGLES if module == s or module.startswith(s + ".")), None)
        if single is not None:
            rules.append(KeyRule(_SINGLES[single] + key[len(single) :], (key,), "copy"))
            continue
        prefix = max((p for p in prefixes if key.startswith(p + ".")), key=len, default=None)
        if prefix is None:
            raise ValueError(f"no VGen counterpart for {key}; is this an I2VGen-XL UNet?")
        vgen_prefix, kind = prefixes[prefix]
        rest = key[len(prefix) + 1 :]
        rule_kind = "copy"
        if kind == "resnet":
            name, _, tail = rest.partition(".")
            rest = f"{_RESNET[name]}.{tail}"
        elif kind == "temporal" and rest in ("proj_in.weight", "proj_out.weight"):
            rule_kind = "conv1d"
        rules.append(KeyRule(f"{vgen_prefix}.{rest}", (key,), rule_kind))
    for param, parts in qkv.items():
        keys = tuple(parts[c] for c in "qkv")
        rules.append(KeyRule(f"local_temporal_encoder.layers.0.0.fn.to_qkv.{param}", keys, "qkv"))
    return rules


def infer_unet_config(state: Mapping[str, torch.Tensor]) -> dict:
    """diffusers ``I2VGenXLUNet`` constructor arguments of a VGen ``UNetSD_I2VGen`` state dict."""
    _require(state, ["input_blocks.0.0.weight", "out.2.weight", "input_blocks.0.1.proj_in.weight"])
    levels: list[list] = []  # [channels, ResBlocks, attention] per level
    current = None
    k = 1
    while True:
        if f"input_blocks.{k}.op.weight" in state:  # a Downsample ends the level
            current = None
        elif f"input_blocks.{k}.0.in_layers.2.weight" in state:
            if current is None:
                attention = f"input_blocks.{k}.1.proj_in.weight" in state
                current = [int(state[f"input_blocks.{k}.0.in_layers.2.weight"].shape[0]), 0, attention]
                levels.append(current)
            current[1] += 1
        else:
            break
        k += 1
    channels = [level[0] for level in levels]
    layers = [level[1] for level in levels]
    attention = [level[2] for level in levels]
    per_level = sorted(set(layers))
    if not channels or len(per_level) != 1:
        raise UserError(
            "checkpoint: could not read the UNet's levels from input_blocks.* "
            f"(found channels {channels}, ResBlocks per level {layers}); is this a VGen UNetSD_I2VGen checkpoint?"
        )
    in_channels = int(state["input_blocks.0.0.weight"].shape[1]) // 2
    cross = next(
        (int(v.shape[1]) for k_, v in state.items() if k_.endswith("transformer_blocks.0.attn2.to_k.weight")
         and k_.startswith("middle_block.1.")),
        int(state["local_image_embedding.5.weight"].shape[0]) if "local_image_embedding.5.weight" in state else 0,
    )  # fmt: skip
    head_dim = int(state["input_blocks.0.1.proj_in.weight"].shape[0]) // 8  # diffusers: 8 heads in transformer_in
    return {
        "in_channels": in_channels,
        "out_channels": int(state["out.2.weight"].shape[0]),
        "down_block_types": tuple("CrossAttnDownBlock3D" if a else "DownBlock3D" for a in attention),
        "up_block_types": tuple("CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(attention)),
        "block_out_channels": tuple(channels),
        "layers_per_block": per_level[0],
        "norm_num_groups": 32,
        "cross_attention_dim": cross,
        "attention_head_dim": head_dim,
    }


def _require(state: Mapping[str, torch.Tensor], keys: list[str]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise UserError(
            f"checkpoint: no {', '.join(missing[:3])}; expected a VGen / VideoMV UNetSD_I2VGen state dict "
            f"(it has {len(state)} keys, e.g. {sorted(state)[:3]})"
        )


def load_vgen_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A VGen / VideoMV checkpoint as a flat state dict. ``.safetensors`` files are read directly;
    torch pickles (``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``) only with ``torch.load(weights_only=True)``
    (tensors, dicts and numbers load; arbitrary objects are refused). A top-level ``state_dict``
    entry is unwrapped and a DDP ``module.`` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CKPT: no such file: {path}; pass VideoMV's checkpoint (.pth or .safetensors)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types for a damaged header
            raise UserError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0][:200]})") from err
    else:
        import pickle

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        # A file that is not a torch checkpoint at all fails inside the unpickler with assorted
        # errors (KeyError, ValueError, ...): all mean "not a state dict gen4d can read".
        except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, TypeError) as err:
            raise UserError(
                f"{path}: not loadable as plain tensors with torch.load(weights_only=True) "
                f"({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}); gen4d never unpickles arbitrary objects from a user's file. "
                "Re-save the state dict as safetensors in a trusted environment"
            ) from err
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path}: expected a state dict (key -> tensor), got {type(state).__name__}")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: entries that are not tensors: {bad[:3]}; expected a state dict of tensors")
    return state


def _few(keys) -> str:
    keys = sorted(keys)
    return f"{len(keys)} (e.g. {', '.join(keys[:3])})"


def vgen_to_gen4d(state: Mapping[str, torch.Tensor], unet: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(gen4d state dict for ``unet`` without its motion embedding, dropped VGen keys). Unknown,
    missing or mis-shaped keys raise a :class:`UserError` that lists a few."""
    rules = key_rules(unet)
    target = unet.state_dict()
    dropped = [k for k in state if k.startswith(DROPPED_PREFIXES)]
    wanted = {r.vgen for r in rules}
    given = set(state) - set(dropped)
    missing, unknown = wanted - given, given - wanted
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unknown:
            parts.append(f"unknown keys: {_few(unknown)}")
        raise UserError(
            f"checkpoint does not fit the I2VGen-XL layout inferred from it ({'; '.join(parts)}); "
            "only VGen UNetSD_I2VGen / VideoMV image checkpoints are supported"
        )
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        value = state[rule.vgen]
        if rule.kind == "conv1d":
            value = value.squeeze(-1) if value.ndim == 3 else value
        parts = value.chunk(3, dim=0) if rule.kind == "qkv" else (value,)
        for key, part in zip(rule.gen4d, parts):
            if tuple(part.shape) != tuple(target[key].shape):
                raise UserError(
                    f"checkpoint: {rule.vgen} has shape {tuple(value.shape)}, which does not fit {key} "
                    f"{tuple(target[key].shape)}"
                )
            out[key] = part.contiguous()
    return out, dropped


def gen4d_to_vgen(unet: nn.Module) -> dict[str, torch.Tensor]:
    """``unet``'s weights in VGen's layout (the inverse of :func:`vgen_to_gen4d`; the motion
    embedding has no VGen counterpart and is left out)."""
    state = unet.state_dict()
    out = {}
    for rule in key_rules(unet):
        tensors = [state[k].detach().clone() for k in rule.gen4d]
        if rule.kind == "qkv":
            out[rule.vgen] = torch.cat(tensors, dim=0)
        elif rule.kind == "conv1d":
            out[rule.vgen] = tensors[0][..., None]
        else:
            out[rule.vgen] = tensors[0]
    return out


def convert_videomv(
    checkpoint: str | Path,
    out: str | Path,
    base: str | None = "ali-vilab/i2vgen-xl",
    variant: str = "image",
    num_frames: int = 24,
    size: int = 256,
    fps: int = 8,
) -> dict:
    """Write a gen4d model folder from a VGen / VideoMV checkpoint: model.json, unet.safetensors (the
    VideoMV weights + a zero-initialised motion embedding: the starting point for fine-tuning,
    ``gen4d train-vdm --model.init OUT``) and base_unet.safetensors (the same weights: the frozen
    3D-aware model of eq. 3). ``base``: where the VAE and CLIP encoders come from (VideoMV uses
    I2VGen-XL's). Returns a summary."""
    from gen4d.diffusion.vdm.camera import add_camera_embedding
    from gen4d.diffusion.vdm.components import save_video_model
    from gen4d.diffusion.vdm.model import add_motion_embedding, build_unet
    from gen4d.diffusion.vdm.presets import SCHEDULE_PRESETS
    from gen4d.diffusion.vdm.spec import VDMSpec

    if variant not in ("image", "static3d"):
        raise UserError(f"--variant: VGen's UNetSD_I2VGen is the image / static3d architecture, not {variant!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out: {out} exists and is not empty; choose a new folder (nothing is overwritten)")
    state = load_vgen_state_dict(checkpoint)
    config = infer_unet_config(state)
    unet = build_unet(variant, config)
    camera_dim = 0
    if "camera_embedding.0.weight" in state:
        camera_dim = int(state["camera_embedding.0.weight"].shape[1])
        add_camera_embedding(unet, camera_dim)
    converted, dropped = vgen_to_gen4d(state, unet)
    unet.load_state_dict(converted, strict=True)
    base_unet = copy.deepcopy(unet)
    add_motion_embedding(unet)
    spec = VDMSpec(
        variant=variant,
        unet_config=config,
        scheduler=dict(SCHEDULE_PRESETS["videomv"]),
        codec="vae",
        base=base,
        num_frames=num_frames,
        size=size,
        fps=fps,
        camera_dim=camera_dim,
        notes=f"converted from the VGen / VideoMV checkpoint {Path(checkpoint).name} by gen4d convert-videomv"
        + (f"; dropped {len(dropped)} keys of VideoMV's LGM refiner" if dropped else ""),
    )
    save_video_model(out, spec, unet, base_unet)
    return {"out": str(out), "tensors": len(converted), "dropped": len(dropped), "camera_dim": camera_dim,
            "config": config}  # fmt: skip
