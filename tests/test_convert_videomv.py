"""gen4d convert-videomv: VGen / VideoMV checkpoints (UNetSD_I2VGen layout) -> gen4d's I2VGen-XL UNet
with VideoMV's per-frame camera embedding. No released weights here: the VGen layout is re-described
below from VGen's hyper-parameters (module tree and shapes), independently of the converter's rules."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers", reason="the video model needs diffusers (pip install 'gen4d[diffusion]')")

from gen4d.cli import main  # noqa: E402
from gen4d.diffusion.vdm.camera import add_camera_embedding  # noqa: E402
from gen4d.diffusion.vdm.convert import (  # noqa: E402
    gen4d_to_vgen,
    infer_unet_config,
    load_vgen_state_dict,
    vgen_to_gen4d,
)
from gen4d.diffusion.vdm.model import VideoCondition, build_unet, image_condition_latents, predict  # noqa: E402
from gen4d.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

# A small VGen UNetSD_I2VGen: 2 levels, attention at scale 1 only, VideoMV's 16-d camera input.
VGEN = dict(dim=32, dim_mult=(1, 2), num_res_blocks=1, attn_scales=(1.0,), head_dim=8, num_heads=8,
            context_dim=16, in_dim=4, out_dim=4, camera_dim=16)  # fmt: skip


def vgen_layout(dim, dim_mult, num_res_blocks, attn_scales, head_dim, num_heads, context_dim, in_dim, out_dim,
                camera_dim) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Key -> shape of VGen's UNetSD_I2VGen state dict for these hyper-parameters (y_dim = context_dim,
    4 image tokens, concat_dim = in_dim; VGen fixes the image-context output at its context_dim 1024)."""
    shapes: dict[str, tuple[int, ...]] = {}
    embed = dim * 4

    def linear(name, i, o, bias=True):
        shapes[f"{name}.weight"] = (o, i)
        if bias:
            shapes[f"{name}.bias"] = (o,)

    def conv(name, i, o, k=3):
        shapes[f"{name}.weight"] = (o, i, k, k)
        shapes[f"{name}.bias"] = (o,)

    def norm(name, c):
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def block(name, d, ctx):  # BasicTransformerBlock: self-attn, cross-attn (self when ctx is None), GEGLU
        for attn, kv in (("attn1", d), ("attn2", ctx or d)):
            linear(f"{name}.{attn}.to_q", d, d, bias=False)
            linear(f"{name}.{attn}.to_k", kv, d, bias=False)
            linear(f"{name}.{attn}.to_v", kv, d, bias=False)
            linear(f"{name}.{attn}.to_out.0", d, d)
        linear(f"{name}.ff.net.0.proj", d, 8 * d)
        linear(f"{name}.ff.net.2", 4 * d, d)
        for n in (1, 2, 3):
            norm(f"{name}.norm{n}", d)

    def spatial(name, c):  # SpatialTransformer, use_linear=True
        inner = (c // head_dim) * head_dim
        norm(f"{name}.norm", c)
        linear(f"{name}.proj_in", c, inner)
        block(f"{name}.transformer_blocks.0", inner, context_dim)
        linear(f"{name}.proj_out", c, inner)

    def temporal(name, c, heads):  # TemporalTransformer: 1x1 Conv1d projections, self-attention only
        inner = heads * head_dim
        norm(f"{name}.norm", c)
        shapes[f"{name}.proj_in.weight"], shapes[f"{name}.proj_in.bias"] = (inner, c, 1), (inner,)
        block(f"{name}.transformer_blocks.0", inner, None)
        shapes[f"{name}.proj_out.weight"], shapes[f"{name}.proj_out.bias"] = (c, inner, 1), (c,)

    def resblock(name, i, o):  # ResBlock + its TemporalConvBlock_v2 ("temopral_conv")
        norm(f"{name}.in_layers.0", i)
        conv(f"{name}.in_layers.2", i, o)
        linear(f"{name}.emb_layers.1", embed, o)
        norm(f"{name}.out_layers.0", o)
        conv(f"{name}.out_layers.3", o, o)
        if i != o:
            conv(f"{name}.skip_connection", i, o, k=1)
        for n, layer in ((1, 2), (2, 3), (3, 3), (4, 3)):
            norm(f"{name}.temopral_conv.conv{n}.0", o)
            shapes[f"{name}.temopral_conv.conv{n}.{layer}.weight"] = (o, o, 3, 1, 1)
            shapes[f"{name}.temopral_conv.conv{n}.{layer}.bias"] = (o,)

    for seq in ("time_embed", "fps_embedding"):
        linear(f"{seq}.0", dim, embed)
        linear(f"{seq}.2", embed, embed)
    linear("context_embedding.0", context_dim, embed)
    linear("context_embedding.2", embed, context_dim * 4)
    linear("camera_embedding.0", camera_dim, embed)
    linear("camera_embedding.2", embed, embed)
    concat = in_dim
    conv("local_image_concat.0", 4, concat * 4)
    conv("local_image_concat.2", concat * 4, concat * 4)
    conv("local_image_concat.4", concat * 4, concat)
    norm("local_temporal_encoder.layers.0.0.norm", concat)
    linear("local_temporal_encoder.layers.0.0.fn.to_qkv", concat, 3 * 2 * concat, bias=False)
    linear("local_temporal_encoder.layers.0.0.fn.to_out.0", 2 * concat, concat)
    linear("local_temporal_encoder.layers.0.1.net.0.0", concat, 4 * concat)
    linear("local_temporal_encoder.layers.0.1.net.2", 4 * concat, concat)
    conv("local_image_embedding.0", 4, concat * 8)
    conv("local_image_embedding.3", concat * 8, concat * 16)
    conv("local_image_embedding.5", concat * 16, context_dim)

    conv("input_blocks.0.0", in_dim + concat, dim)
    temporal("input_blocks.0.1", dim, num_heads)
    enc = [dim * u for u in (1, *dim_mult)]
    skips, scale, index = [dim], 1.0, 1
    for i, (c_in, c_out) in enumerate(zip(enc[:-1], enc[1:])):
        for j in range(num_res_blocks):
            resblock(f"input_blocks.{index}.0", c_in, c_out)
            if scale in attn_scales:
                spatial(f"input_blocks.{index}.1", c_out)
                temporal(f"input_blocks.{index}.2", c_out, c_out // head_dim)
            c_in = c_out
            skips.append(c_out)
            index += 1
            if i != len(dim_mult) - 1 and j == num_res_blocks - 1:
                conv(f"input_blocks.{index}.op", c_out, c_out)
                skips.append(c_out)
                scale /= 2
                index += 1
    resblock("middle_block.0", c_out, c_out)
    spatial("middle_block.1", c_out)
    temporal("middle_block.2", c_out, c_out // head_dim)
    resblock("middle_block.3", c_out, c_out)
    dec = [dim * u for u in (dim_mult[-1], *dim_mult[::-1])]
    index = 0
    for i, (c_in, c_out) in enumerate(zip(dec[:-1], dec[1:])):
        for j in range(num_res_blocks + 1):
            resblock(f"output_blocks.{index}.0", c_in + skips.pop(), c_out)
            slot = 1
            if scale in attn_scales:
                spatial(f"output_blocks.{index}.1", c_out)
                temporal(f"output_blocks.{index}.2", c_out, c_out // head_dim)
                slot = 3
            c_in = c_out
            if i != len(dim_mult) - 1 and j == num_res_blocks:
                conv(f"output_blocks.{index}.{slot}.conv", c_out, c_out)
                scale *= 2
            index += 1
    norm("out.0", c_out)
    conv("out.2", c_out, out_dim)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}


def converted_unet(state):
    unet = build_unet("image", infer_unet_config(state))
    add_camera_embedding(unet, 16)
    return unet


def test_synthetic_vgen_checkpoint_loads_into_gen4d_unet(tmp_path):
    shapes = vgen_layout(**VGEN)
    state = random_state(shapes)
    state["lgm_big.conv.weight"] = torch.zeros(2)  # VideoMV's LGM refiner: dropped
    path = tmp_path / "videomv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "step": 7}, path)
    loaded = load_vgen_state_dict(path)
    assert loaded.keys() == state.keys()
    config = infer_unet_config(loaded)
    assert config["block_out_channels"] == (32, 64) and config["layers_per_block"] == 1
    assert config["down_block_types"] == ("CrossAttnDownBlock3D", "DownBlock3D")
    assert config["attention_head_dim"] == 8 and config["cross_attention_dim"] == 16
    unet = converted_unet(loaded)
    converted, dropped = vgen_to_gen4d(loaded, unet)
    assert dropped == ["lgm_big.conv.weight"]
    result = unet.load_state_dict(converted, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    gen4d = unet.state_dict()
    # Spot checks written from the two layouts, not from the converter's table.
    pairs = {
        "input_blocks.1.0.in_layers.2.weight": "down_blocks.0.resnets.0.conv1.weight",
        "input_blocks.1.0.temopral_conv.conv4.3.bias": "down_blocks.0.temp_convs.0.conv4.3.bias",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "input_blocks.2.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
        "input_blocks.3.0.skip_connection.weight": "down_blocks.1.resnets.0.conv_shortcut.weight",
        "middle_block.3.emb_layers.1.weight": "mid_block.resnets.1.time_emb_proj.weight",
        "output_blocks.1.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
        "output_blocks.3.2.transformer_blocks.0.ff.net.2.weight": "up_blocks.1.temp_attentions.1.transformer_blocks.0.ff.net.2.weight",
        "time_embed.2.weight": "time_embedding.linear_2.weight",
        "camera_embedding.0.weight": "camera_embedding.linear_1.weight",
        "out.2.weight": "conv_out.weight",
    }  # fmt: skip
    for vgen_key, gen4d_key in pairs.items():
        torch.testing.assert_close(gen4d[gen4d_key], state[vgen_key], rtol=0, atol=0, msg=gen4d_key)
    torch.testing.assert_close(gen4d["transformer_in.proj_in.weight"], state["input_blocks.0.1.proj_in.weight"][..., 0])
    q, k, v = state["local_temporal_encoder.layers.0.0.fn.to_qkv.weight"].chunk(3)
    torch.testing.assert_close(gen4d["image_latents_temporal_encoder.attn1.to_k.weight"], k, rtol=0, atol=0)


def test_round_trip_gen4d_vgen_gen4d_and_same_forward():
    unet = converted_unet(random_state(vgen_layout(**VGEN), seed=1))
    torch.manual_seed(3)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.05)  # also the zero-initialised layers (camera, temporal convs)
    vgen = gen4d_to_vgen(unet)
    expected = vgen_layout(**VGEN)
    assert {k: tuple(v.shape) for k, v in vgen.items()} == expected  # exactly VGen's layout
    back, _ = vgen_to_gen4d(vgen, unet)
    original = unet.state_dict()
    assert back.keys() == original.keys()
    for key in back:
        torch.testing.assert_close(back[key], original[key], rtol=0, atol=0, msg=key)
    rebuilt = converted_unet(vgen)
    rebuilt.load_state_dict(back)
    frames = 3
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, frames, 8, 8, generator=gen)
    cond = VideoCondition(
        text=torch.randn(1, 2, 16, generator=gen),
        image_embeds=torch.randn(1, 16, generator=gen),
        latents=image_condition_latents(torch.randn(1, 4, 8, 8, generator=gen), frames),
        camera=torch.randn(1, frames, 16, generator=gen),
    )
    with torch.no_grad():
        a = predict(unet.eval(), "image", sample, torch.tensor([500]), cond)
        b = predict(rebuilt.eval(), "image", sample, torch.tensor([500]), cond)
        no_camera = predict(
            unet, "image", sample, torch.tensor([500]), VideoCondition(**{**cond.__dict__, "camera": None})
        )
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - no_camera).abs().max() > 1e-4  # the cameras reach the network


def test_camera_embedding_is_added_to_each_frames_time_embedding():
    """A camera that is the same in every frame acts like a shift of the per-video embedding (VideoMV adds
    camera(frame) to time + fps embedding): compare with the fps embedding's bias shifted by it."""
    unet = converted_unet(random_state(vgen_layout(**VGEN), seed=2)).eval()
    with torch.no_grad():
        unet.camera_embedding.linear_2.weight.normal_(0, 0.1)
    frames = 3
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, frames, 8, 8, generator=gen)
    base = VideoCondition(latents=image_condition_latents(torch.randn(1, 4, 8, 8, generator=gen), frames))
    camera = torch.randn(1, 1, 16, generator=gen).expand(1, frames, 16)
    with torch.no_grad():
        with_camera = predict(
            unet, "image", sample, torch.tensor([300]), VideoCondition(**{**base.__dict__, "camera": camera})
        )
        shift = unet.camera_embedding(camera[0, :1])[0]
        unet.fps_embedding[2].bias += shift
        shifted = predict(unet, "image", sample, torch.tensor([300]), base)
    torch.testing.assert_close(with_camera, shifted, rtol=1e-4, atol=1e-5)


def test_cli_converts_and_bad_checkpoints_get_clear_errors(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    state = random_state(vgen_layout(**VGEN))
    good = tmp_path / "videomv.safetensors"
    save_file(state, str(good))
    assert main(["convert-videomv", str(good), "--out", str(tmp_path / "model"), "--base", "none"]) == 0
    spec = json.loads((tmp_path / "model" / "model.json").read_text())
    assert spec["camera_dim"] == 16 and spec["scheduler"]["prediction_type"] == "v_prediction"
    unet = build_unet("image", spec["unet_config"])
    add_camera_embedding(unet, 16)
    weights = load_file(str(tmp_path / "model" / "base_unet.safetensors"))
    unet.load_state_dict(weights, strict=True)
    torch.testing.assert_close(weights["conv_in.weight"], state["input_blocks.0.0.weight"], rtol=0, atol=0)
    motion = [k for k in load_file(str(tmp_path / "model" / "unet.safetensors")) if ".motion." in k]
    assert motion  # unet.safetensors: + a zero-initialised motion embedding, ready for train-vdm --model.init
    # The output folder is never overwritten.
    assert main(["convert-videomv", str(good), "--out", str(tmp_path / "model")]) == 2
    assert "not empty" in capsys.readouterr().err

    unet = converted_unet(state)
    broken = dict(state)
    del broken["middle_block.1.proj_in.weight"]
    broken["input_blocks.9.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match=r"missing keys: 1 \(e.g. middle_block.1.proj_in.weight\).*unknown keys"):
        vgen_to_gen4d(broken, unet)
    wrong = dict(state)
    wrong["out.2.bias"] = torch.zeros(5)
    with pytest.raises(UserError, match="out.2.bias has shape"):
        vgen_to_gen4d(wrong, unet)
    # A pickle with an arbitrary object is refused (weights_only=True), with the reason.
    evil = tmp_path / "object.pth"
    torch.save({"state_dict": state, "cfg": ValueError("not a tensor")}, evil)
    with pytest.raises(UserError, match="weights_only=True"):
        load_vgen_state_dict(evil)
    with pytest.raises(UserError, match="no such file"):
        load_vgen_state_dict(tmp_path / "absent.pth")
    # Files that are no checkpoint at all (text, random bytes, a damaged safetensors header).
    for name, data in (("text.pth", b"junk\n"), ("random.pth", bytes(range(256)) * 3), ("bad.safetensors", b"junk")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=name):
            load_vgen_state_dict(tmp_path / name)
