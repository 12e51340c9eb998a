"""CLIP similarity: image-image and text-image cosine similarity of CLIP embeddings.

Model: transformers' ``CLIPModel`` (default ``openai/clip-vit-base-patch32``, the ViT-B/32 that
Consistent4D and Diffusion4D report), loaded from a local folder or a hub id already in the
local Hugging Face cache - gen4d never downloads (``local_files_only=True`` unless you ask).

Preprocessing of (B, H, W, 3) images in [0, 1], two modes:

* ``"pil"`` (default, what evaluation scripts do): quantise to uint8, resize the short side to
  the model's size with PIL bicubic, centre-crop, scale by 1/255, normalise with the CLIP
  mean / std - the same pixels as transformers' ``CLIPImageProcessor`` (checked in the tests).
  Not differentiable.
* ``"torch"``: the same steps in torch (bicubic with antialiasing, no uint8 quantisation);
  differentiable, and close to but not bit-identical with ``"pil"``.

``pre_resize`` (e.g. 512, the Consistent4D protocol) first resizes every image to that square
size with the same resampler.

Metric definitions used by ``gen4d eval`` (see docs/evaluation.md):

* CLIP (Consistent4D): mean cosine similarity of paired render / ground truth images at the same
  camera and time (:func:`clip_similarity`).
* CLIP-F / CLIP-O (Diffusion4D): mean cosine similarity of renders against one reference - the
  text prompt or the front image - over the front-view frames (F) or the orbit views (O)
  (:func:`clip_reference_similarity`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from gen4d.metrics.image import _as_batch, _pair, _reduce
from gen4d.metrics.weights import MissingWeightsError

__all__ = ["CLIPScorer", "DEFAULT_CLIP", "clip_similarity", "clip_reference_similarity", "load_clip"]

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_INSTALL_HINT = "pip install 'gen4d[diffusion]' (transformers)"

Mode = Literal["pil", "torch"]


def _read_preprocessor_config(name_or_path: str, local_files_only: bool) -> dict:
    path = Path(name_or_path)
    if path.is_dir():
        file = path / "preprocessor_config.json"
        return json.loads(file.read_text()) if file.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "preprocessor_config.json")
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text())
        if not local_files_only:
            return json.loads(Path(hf_hub_download(name_or_path, "preprocessor_config.json")).read_text())
    except Exception:  # noqa: BLE001 - fall back to the OpenAI CLIP defaults below
        pass
    return {}


def _edge(value, default: int) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return int(value.get("shortest_edge") or value.get("height") or default)
    return default


class CLIPScorer:
    """A frozen CLIP model plus its preprocessing. Embeddings are unit-normalised."""

    def __init__(
        self,
        model,
        tokenizer=None,
        image_size: int | None = None,
        crop_size: int | None = None,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        mode: Mode = "pil",
        pre_resize: int | None = None,
    ) -> None:
        if mode not in ("pil", "torch"):
            raise ValueError(f"CLIPScorer: mode must be 'pil' or 'torch', got {mode!r}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        default = int(model.config.vision_config.image_size)
        self.image_size = int(image_size or default)
        self.crop_size = int(crop_size or default)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.mode: Mode = mode
        self.pre_resize = pre_resize

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_CLIP,
        device: torch.device | str = "cpu",
        mode: Mode = "pil",
        pre_resize: int | None = None,
        local_files_only: bool = True,
    ) -> CLIPScorer:
        """Load model, tokenizer (if present) and preprocessing sizes from a folder or hub id."""
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as err:
            raise ImportError(f"CLIP metrics need transformers: {_INSTALL_HINT}") from err
        name = str(name_or_path)
        try:
            model = CLIPModel.from_pretrained(name, local_files_only=local_files_only)
        except OSError as err:
            raise MissingWeightsError(
                f"CLIP weights {name!r} not found locally ({str(err).splitlines()[0][:200]}); on a machine with "
                f"internet run `huggingface-cli download {DEFAULT_CLIP} --local-dir clip-vit-base-patch32` "
                "and pass that folder (gen4d eval --clip_model FOLDER), or fill the Hugging Face cache"
            ) from err
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
        except (OSError, ValueError, TypeError):
            tokenizer = None  # image-image similarity still works; text prompts will raise
        config = _read_preprocessor_config(name, local_files_only)
        default = int(model.config.vision_config.image_size)
        return cls(
            model.to(device),
            tokenizer,
            image_size=_edge(config.get("size"), default),
            crop_size=_edge(config.get("crop_size"), default),
            mean=config.get("image_mean", OPENAI_CLIP_MEAN),
            std=config.get("image_std", OPENAI_CLIP_STD),
            mode=mode,
            pre_resize=pre_resize,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- preprocessing ----------------------------------------------------------------------------
    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        short, long = (height, width) if height <= width else (width, height)
        long_out = int(self.image_size * long / short)
        return (self.image_size, long_out) if height <= width else (long_out, self.image_size)

    def _preprocess_pil(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        out = []
        for array in arrays:
            image = Image.fromarray(np.ascontiguousarray(array))
            if self.pre_resize:
                image = image.resize((self.pre_resize, self.pre_resize), resample=Image.BICUBIC)
            height, width = self._resized_size(image.height, image.width)
            image = image.resize((width, height), resample=Image.BICUBIC)
            top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
            image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
            out.append(np.asarray(image, dtype=np.float32) / 255.0)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)

    def _preprocess_torch(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)
        if self.pre_resize:
            x = F.interpolate(
                x, size=(self.pre_resize, self.pre_resize), mode="bicubic", antialias=True, align_corners=False
            )
        height, width = self._resized_size(x.shape[2], x.shape[3])
        x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        return x[:, :, top : top + self.crop_size, left : left + self.crop_size].clamp(0, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1] -> (B, 3, S, S) normalised pixel values for the vision tower."""
        images = _as_batch("images", images)
        x = self._preprocess_pil(images) if self.mode == "pil" else self._preprocess_torch(images)
        dtype = next(self.model.parameters()).dtype
        x = x.to(self.device, dtype)
        mean = torch.tensor(self.mean, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    # -- embeddings -----------------------------------------------------------------------------
    def embed_images(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1] -> (B, D) unit-norm image embeddings."""
        images = _as_batch("images", images)
        outs = []
        for start in range(0, images.shape[0], batch_size):
            pixels = self.preprocess(images[start : start + batch_size])
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            outs.append(self.model.visual_projection(pooled))
        return F.normalize(torch.cat(outs).float(), dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """K prompts -> (K, D) unit-norm text embeddings."""
        if self.tokenizer is None:
            raise ValueError("CLIP text similarity needs the model's tokenizer; this CLIP folder has none")
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=int(self.model.config.text_config.max_position_embeddings),
            return_tensors="pt",
        )
        out = self.model.text_model(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        )
        return F.normalize(self.model.text_projection(out.pooler_output).float(), dim=-1)


def load_clip(
    name_or_path: str | os.PathLike = DEFAULT_CLIP,
    device: torch.device | str = "cpu",
    mode: Mode = "pil",
    pre_resize: int | None = None,
) -> CLIPScorer:
    """:meth:`CLIPScorer.from_pretrained` (local files only)."""
    return CLIPScorer.from_pretrained(name_or_path, device=device, mode=mode, pre_resize=pre_resize)


def clip_similarity(
    scorer: CLIPScorer,
    pred: torch.Tensor,
    target: torch.Tensor,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Cosine similarity of CLIP embeddings of paired (B, H, W, 3) images (1 = identical)."""
    pred, target = _pair(pred, target)
    return _reduce((scorer.embed_images(pred) * scorer.embed_images(target)).sum(-1), reduction)


def clip_reference_similarity(
    scorer: CLIPScorer,
    images: torch.Tensor,
    reference: torch.Tensor | str,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Cosine similarity of each of (B, H, W, 3) images to one reference: a text prompt or an
    image (H', W', 3) / (1, H', W', 3) (any size; e.g. the input front view)."""
    embeds = scorer.embed_images(images)
    if isinstance(reference, str):
        ref = scorer.embed_texts([reference])
    else:
        ref_image = _as_batch("reference", reference)
        if ref_image.shape[0] != 1:
            raise ValueError(f"reference: expected one image (1, H, W, 3), got {tuple(ref_image.shape)}")
        ref = scorer.embed_images(ref_image)
    return _reduce((embeds * ref.to(embeds.device)).sum(-1), reduction)
