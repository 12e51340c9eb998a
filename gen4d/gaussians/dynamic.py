"""The 4D model: canonical 3D Gaussians + a deformation field.

``DynamicGaussians.at(times (B,)) -> Gaussians (B, N, ...)`` deforms the canonical set to each
time; ``render(cameras)`` deforms to every camera's time and rasterises all cameras in one
``gen4d.render.render`` call. While ``deform_enabled`` is False (the static / coarse stage) the
field is bypassed and every time sees the canonical set.

Saved as a folder: ``model.safetensors`` (canonical Gaussians under ``gaussians.*``, field
weights under ``field.*``, the whole-object turn, when there is one, under ``turn.*``) + ``model.json`` (field config, SH degree, flags), see
:meth:`DynamicGaussians.save` / :meth:`DynamicGaussians.load`.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn

from gen4d.cameras import Cameras
from gen4d.config import from_dict, to_dict
from gen4d.deform import DeformationField, DeformConfig, build_field, check_times, rigidity_terms
from gen4d.deform.turn import TurnTrack
from gen4d.gaussians.core import Gaussians
from gen4d.io import atomic_path, read_json, read_safetensors, write_json
from gen4d.render import RenderOptions, RenderOutput, render

__all__ = ["DynamicGaussians", "GAUSSIAN_FIELDS", "MODEL_FORMAT"]

GAUSSIAN_FIELDS = tuple(f.name for f in fields(Gaussians))
"""Names of the canonical per-Gaussian parameters: means, log_scales, quats, opacity_logits, sh."""
MODEL_FORMAT = "gen4d.DynamicGaussians/1"


class DynamicGaussians(nn.Module):
    """Canonical Gaussians (``self.params``, one ``nn.Parameter`` per field, first dim N) plus a
    deformation field (``self.field``)."""

    def __init__(self, canonical: Gaussians, deform: DeformConfig | None = None, deform_enabled: bool = True):
        super().__init__()
        canonical.validate("canonical")
        if canonical.batched:
            raise ValueError("DynamicGaussians: canonical Gaussians must be unbatched (N, ...)")
        self.deform_config = deform or DeformConfig()
        self.params = nn.ParameterDict(
            {name: nn.Parameter(value.detach().clone()) for name, value in canonical.as_dict().items()}
        )
        self.field: DeformationField = build_field(self.deform_config)
        self.turn = TurnTrack()
        """Whole-object yaw per time, applied after the field (empty = identity; set by construction's turn search)."""
        self.deform_enabled = bool(deform_enabled)

    # -- views ----------------------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    def __len__(self) -> int:
        return self.num_gaussians

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def canonical(self) -> Gaussians:
        """The canonical set (N, ...), differentiable w.r.t. ``self.params``."""
        return Gaussians(**{name: self.params[name] for name in GAUSSIAN_FIELDS})

    def at(self, times: torch.Tensor) -> Gaussians:
        """Gaussians (B, N, ...) at ``times`` (B,) in [0, 1] (the canonical set, expanded, while the
        deformation is disabled)."""
        times = check_times(
            torch.as_tensor(times, device=self.device) if not isinstance(times, torch.Tensor) else times
        )
        canonical = self.canonical()
        times = times.to(device=self.device, dtype=canonical.means.dtype)
        if not self.deform_enabled:
            batch = times.shape[0]
            return canonical.map(lambda x: x.unsqueeze(0).expand((batch,) + tuple(x.shape)))
        return self.turn(self.field(canonical, times), times)

    def render(
        self,
        cameras: Cameras,
        background: torch.Tensor | None = None,
        options: RenderOptions | None = None,
        at: Gaussians | None = None,
    ) -> RenderOutput:
        """Render every camera at its own time in one ``render()`` call (``at``: the set already
        deformed to the cameras' times by :meth:`at`, when the caller needs it too)."""
        options = options or RenderOptions()
        if not self.deform_enabled:
            # Every time sees the same set: share it (same images, less work than a batch).
            return render(self.canonical(), cameras, background, options)
        return render(self.at(cameras.times.to(self.device)) if at is None else at, cameras, background, options)

    def regularization(
        self, times: torch.Tensor, at: Gaussians | None = None, anchors: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The field's named regularisers at ``times`` (empty while the deformation is off); ``at``:
        the set deformed to ``times`` when the caller has it (the rigidity terms then sample it
        instead of running the field again); ``anchors``: the rigidity sample, drawn when not given."""
        if not self.deform_enabled:
            return {}
        canonical, times = self.canonical(), times.to(self.device)
        terms = self.field.regularization(canonical, times)
        rigidity = self.deform_config.rigidity
        if rigidity.displacement and not self.turn.learnable:  # only on top of a learned whole-object motion
            rigidity = replace(rigidity, displacement=False)
        terms.update(rigidity_terms(self.field, canonical, times, rigidity, at, anchors, whole=self.turn))
        return terms

    def before_step(self, step: int) -> None:
        """Run the field's per-step hook (scheduled cache refreshes) before a training step's
        renders; nothing while the deformation is off."""
        if self.deform_enabled:
            self.field.before_step(self.params["means"].detach(), step)

    def enable_deformation(self, prepare: bool = True) -> dict[nn.Parameter, nn.Parameter]:
        """Switch the field on (end of the static stage); ``prepare`` runs the field's set-up hook
        on the current canonical Gaussians (e.g. placing control points). Returns ``{old: new}``
        for field parameters the set-up replaced (an optimiser must follow them:
        ``Adam.replace_parameters``)."""
        before = dict(self.field.named_parameters())
        if prepare:
            self.field.prepare(self.canonical().detach())
        self.deform_enabled = True
        return {before[name]: p for name, p in self.field.named_parameters() if before.get(name) is not p}

    # -- per-Gaussian tensors (densification) ---------------------------------------------------
    def per_gaussian_state(self) -> dict[str, torch.Tensor]:
        """Non-parameter tensors with one row per Gaussian (the field's caches)."""
        return self.field.per_gaussian_state()

    def set_per_gaussian_state(self, state: dict[str, torch.Tensor]) -> None:
        self.field.set_per_gaussian_state(state)

    def per_gaussian_parameters(self) -> dict[str, nn.Parameter]:
        """The field's parameters with one row per Gaussian (e.g. blend weights)."""
        return self.field.per_gaussian_parameters()

    def set_per_gaussian_parameters(self, params: dict[str, nn.Parameter]) -> None:
        self.field.set_per_gaussian_parameters(params)

    # -- saving -------------------------------------------------------------------------------
    def metadata(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "num_gaussians": self.num_gaussians,
            "sh_degree": self.canonical().sh_degree,
            "deform_enabled": self.deform_enabled,
            "deform": to_dict(self.deform_config),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor dict (CPU, contiguous) of everything needed to rebuild the model."""
        out = {f"gaussians.{name}": self.params[name].detach() for name in GAUSSIAN_FIELDS}
        out.update({f"field.{k}": v.detach() for k, v in self.field.state_dict().items()})
        if self.turn.active:
            out.update({f"turn.{k}": v.detach() for k, v in self.turn.state_dict().items()})
        return {k: v.to("cpu").contiguous() for k, v in out.items()}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``model.json`` into ``folder`` (each file atomically)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "model.safetensors") as tmp:
            save_file(self.tensors(), str(tmp), metadata={"format": MODEL_FORMAT})
        write_json(folder / "model.json", self.metadata())
        return folder

    @classmethod
    def from_tensors(cls, metadata: dict, tensors: dict[str, torch.Tensor]) -> DynamicGaussians:
        if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
            found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            raise ValueError(f"not a gen4d DynamicGaussians checkpoint (format {found!r}, expected {MODEL_FORMAT!r})")
        for key in ("deform", "deform_enabled"):
            if key not in metadata:
                raise ValueError(f"model metadata lacks the {key!r} field")
        missing = [f"gaussians.{n}" for n in GAUSSIAN_FIELDS if f"gaussians.{n}" not in tensors]
        if missing:
            raise ValueError(f"checkpoint lacks tensors {missing}")
        canonical = Gaussians(**{n: tensors[f"gaussians.{n}"] for n in GAUSSIAN_FIELDS})
        model = cls(canonical, from_dict(DeformConfig, metadata["deform"]), deform_enabled=metadata["deform_enabled"])
        field_state = {k[len("field.") :]: v for k, v in tensors.items() if k.startswith("field.")}
        model.field.load_state_dict(field_state)
        turn_state = {k[len("turn.") :]: v for k, v in tensors.items() if k.startswith("turn.")}
        if turn_state:
            model.turn.load_state_dict(turn_state)
        return model

    @classmethod
    def load(cls, folder: str | os.PathLike, device: torch.device | str = "cpu") -> DynamicGaussians:
        """Rebuild a model written by :meth:`save`. A damaged or hand-edited checkpoint is a
        ValueError naming the folder (never a traceback from deep inside the loader)."""
        folder = Path(folder)
        if not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"no model checkpoint in {folder} (expected model.safetensors and model.json)")
        metadata = read_json(folder / "model.json")
        tensors = read_safetensors(folder / "model.safetensors")
        try:
            model = cls.from_tensors(metadata, tensors)
        except (ValueError, TypeError, KeyError, RuntimeError) as err:  # RuntimeError: load_state_dict mismatches
            detail = " ".join(str(err).split())[:300]
            raise ValueError(
                f"{folder}: not a loadable gen4d model checkpoint (model.json + model.safetensors): {detail}; "
                "the files are damaged or were edited: restore the run folder or run it again"
            ) from err
        return model.to(device)
