"""Configs and presets of 4D construction (:func:`gen4d.recon.construct.reconstruct`).

``ConstructConfig()`` is the ``default`` preset; ``PRESETS`` names the others. Each field carries a
one-line docstring that ``gen4d reconstruct --help`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gen4d.config import ConfigError, check_non_negative, check_positive, check_range
from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig, RigidityConfig
from gen4d.densify import DensifyConfig, MCMCConfig
from gen4d.recon.losses import LossWeights
from gen4d.recon.optim import LearningRates
from gen4d.recon.turn_search import RigidMotionConfig, TurnSearchConfig

__all__ = [
    "InitConfig",
    "StageConfig",
    "OutputConfig",
    "CandidatesConfig",
    "ConstructConfig",
    "TurnSearchConfig",
    "RigidMotionConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "preset",
    "with_iterations",
]


# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitConfig:
    """Initial canonical Gaussians (random in a ball, as STAG4D)."""

    num_points: int = 10000
    """Number of initial Gaussians."""
    radius: float = 0.5
    """Radius of the ball they are drawn in (objects normalised to the unit cube)."""
    opacity: float = 0.1
    """Initial opacity."""
    sh_degree: int = 0
    """Spherical-harmonics degree of the colours (0 = RGB)."""

    def __post_init__(self) -> None:
        check_positive(self, "num_points", "radius")
        check_range(self, "opacity", 0.0, 1.0)
        check_range(self, "sh_degree", 0, 3)


@dataclass(frozen=True)
class StageConfig:
    """One optimisation stage."""

    iterations: int = 1000
    """Steps of this stage (0 skips it)."""
    cameras_per_step: int = 4
    """Training images rendered per step (one rasteriser call)."""
    static_orbit: bool = True
    """Also train on the static orbit V-bar (time 0) when the dataset has it."""
    orbit: bool = True
    """Train on the orbit video V (False: the static orbit alone, when the dataset has one)."""
    canonical_lr: float = 1.0
    """Factor on the canonical Gaussians' learning rates in this stage (0 freezes them)."""
    time_window: float = 0.0
    """Coarse-to-fine in time: the trained times grow from the first to all over this fraction of the stage (0 = all from the start)."""
    densify: bool = True
    """Run densification in this stage (schedule in ConstructConfig.densify, in stage steps)."""

    def __post_init__(self) -> None:
        check_non_negative(self, "iterations")
        check_positive(self, "cameras_per_step")
        check_range(self, "time_window", 0.0, 1.0)


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes at the end."""

    ply: bool = True
    """Per-frame PLY sequence in RUN/ply."""
    video: bool = True
    """Orbit video RUN/videos/orbit.mp4 and orbit.gif."""
    video_frames: int = 96
    """Frames of the orbit video."""
    video_size: int = 256
    """Orbit video resolution (0 = the training image size)."""
    video_elevation: float = 15.0
    """Elevation of the orbit video camera, degrees."""
    video_fps: int = 24
    """Frames per second of the videos."""
    renders: bool = True
    """PNG renders at the held-out cameras in RUN/renders/<split>."""
    lpips: bool = True
    """Report LPIPS-VGG when its weights are available."""
    evaluate: bool = True
    """Compute the held-out splits' image metrics of metrics.json (the training orbit's are always computed)."""

    def __post_init__(self) -> None:
        check_positive(self, "video_frames", "video_fps")
        check_non_negative(self, "video_size")


@dataclass(frozen=True)
class CandidatesConfig:
    """Whole runs started side by side with different seeds; the one that fits its training views best is kept."""

    count: int = 1
    """Runs at once (separate processes, spread over the CUDA devices; RUN/candidates/<i>, seeds seed + i); 1 = one run."""
    turn_min_gain: float = 0.1
    """The turn search's min_gain in every run but the first (which uses turn.min_gain): a turn the search finds
    between the two is tried in one run and not in the other, and the fit to the training views decides."""

    def __post_init__(self) -> None:
        check_positive(self, "count")
        check_range(self, "turn_min_gain", 0.0, 1.0)


def _hexplane(
    resolution: int, time_res: int, multires: tuple[int, ...], features: int = 32, bounds: float = 1.0
) -> HexPlaneConfig:
    return HexPlaneConfig(
        features=features, resolution=(resolution,) * 3 + (time_res,), multires=multires, bounds=bounds
    )


MAX_SIZE = 8192
"""Largest ``size`` (pixels per side) a construction config accepts."""


@dataclass(frozen=True)
class ConstructConfig:
    """4D construction (coarse static stage, fine dynamic stage); the defaults are the ``default`` preset."""

    seed: int = 0
    """Random seed (initialisation, camera sampling, backgrounds, splits)."""
    size: int = 0
    """Resize the images to size x size before training (0 = as stored)."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ..."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasteriser: gsplat on CUDA, the PyTorch reference elsewhere."""
    tile_size: int = 16
    """torch backend: tile edge in pixels (8 is faster for images of 64 px and less)."""
    cuda_graphs: bool = True
    """On CUDA, replay the fixed-shape parts of a step (image losses; deformation and regularisers in a stage without densification) as CUDA graphs: the same maths with less host overhead."""
    train_background: Literal["white", "black", "random"] = "random"
    """Background of training renders and targets (random: a colour per image per step)."""
    eval_background: Literal["white", "black"] = "white"
    """Background for metrics, held-out renders and videos."""
    init: InitConfig = field(default_factory=InitConfig)
    """Initial Gaussians."""
    coarse: StageConfig = field(
        default_factory=lambda: StageConfig(iterations=600, cameras_per_step=4, static_orbit=True, orbit=False)
    )
    """Static stage (deformation bypassed); by default on the static orbit alone, so the canonical set is the
    object at time 0, seen from all around."""
    fine: StageConfig = field(
        default_factory=lambda: StageConfig(iterations=800, cameras_per_step=4, static_orbit=True, densify=False)
    )
    """Dynamic stage (deformation on); by default without densification, the static orbit keeping time 0 fixed."""
    deform: DeformConfig = field(
        default_factory=lambda: DeformConfig(
            field=replace(_hexplane(32, 12, (1, 2)), deform_scale=False),
            rigidity=RigidityConfig(samples=2048, displacement=True),
        )
    )
    """Deformation field (default: HexPlane moving and turning the Gaussians, not resizing them, with local
    rigidity between neighbours, and kept small where a whole-object rigid motion is learned)."""
    turn: TurnSearchConfig = field(default_factory=TurnSearchConfig)
    """Whole-object turn per time about the vertical axis, searched before the fine stage (kept only when it
    explains the images clearly better than no turn)."""
    rigid: RigidMotionConfig = field(default_factory=RigidMotionConfig)
    """Learned whole-object rigid motion per time (on top of the turn) in the fine stage."""
    densify: DensifyConfig | MCMCConfig = field(
        default_factory=lambda: DensifyConfig(
            start=100, stop=600, every=100, reset_every=0, prune_opacity=0.01, max_gaussians=150_000
        )
    )
    """Densification, chosen by the config's class: 'adaptive' (DensifyConfig: 3DGS clone / split / prune) or 'mcmc'
    (MCMCConfig: 3DGS-MCMC, fixed cap); steps counted within each stage."""
    lr: LearningRates = field(default_factory=LearningRates)
    """Learning rates."""
    loss: LossWeights = field(default_factory=lambda: LossWeights(rigidity=0.01, displacement=1e-3))
    """Loss weights."""
    log_every: int = 100
    """Update the progress bar, log and check for NaN every this many steps."""
    checkpoint_every: int = 0
    """Write RUN/checkpoint every this many steps (also at each stage end; 0 = only then)."""
    checkpoint_seconds: float = 120.0
    """Also write RUN/checkpoint when this many seconds of training passed since the last one (negative = never)."""
    eval_every: int = 0
    """Measure held-out PSNR every this many steps (quality vs iterations; 0 = only at the end)."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Outputs written at the end."""
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    """Several whole runs at once, the best fit to the training views kept (RUN holds its outputs; off: one run)."""

    def __post_init__(self) -> None:
        if self.coarse.iterations + self.fine.iterations <= 0:
            raise ConfigError(
                "fine.iterations", "coarse.iterations + fine.iterations must be > 0, got 0 for both", "ConstructConfig"
            )
        check_non_negative(self, "size", "checkpoint_every", "eval_every")
        if self.size > MAX_SIZE:  # it would only fail later, allocating terabytes
            raise ConfigError(
                "size", f"expected at most {MAX_SIZE} pixels per side, got {self.size}", "ConstructConfig"
            )
        check_positive(self, "tile_size", "log_every")

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """Configs stored by earlier gen4d versions read as they ran: one with a ``turn`` but no ``rigid``
        section learned no whole-object motion (``rigid.when = "never"``, so such a run resumes as
        it started), one without ``loss.displacement`` had no such term (0); the layout before typed
        unions (``strategy`` beside ``densify`` and ``mcmc``) read as the current one
        (``densify: {"type": "adaptive" or "mcmc", ...}``)."""
        if "turn" in data and "rigid" not in data:
            data["rigid"] = {"when": "never"}
        if isinstance(data.get("loss"), dict) and "displacement" not in data["loss"]:
            data["loss"]["displacement"] = 0.0
        densify = data.get("densify")
        if "strategy" not in data and "mcmc" not in data and not (isinstance(densify, dict) and "type" not in densify):
            return data
        strategy = data.pop("strategy", "default")
        mcmc = data.pop("mcmc", {})
        chosen = {"default": densify or {}, "mcmc": mcmc}.get(strategy, {})
        kind = {"default": "adaptive"}.get(strategy, strategy)  # the 3DGS strategy was called 'default'
        data["densify"] = {"type": kind, **chosen} if isinstance(chosen, dict) else chosen
        return data

    @property
    def total_iterations(self) -> int:
        return self.coarse.iterations + self.fine.iterations


PRESETS: dict[str, ConstructConfig] = {
    # The GPU preset (ConstructConfig's defaults): a canonical set of the object at time 0 from the
    # static orbit, then motion without densification, no resizing and local rigidity between
    # neighbouring Gaussians (docs/reconstruction.md; settings chosen on tuning renders that no
    # benchmark uses).
    "default": ConstructConfig(),
    # Diffusion4D's 4D construction schedule (4DGS: 5k coarse + 2k fine, one image per step),
    # 4DGS-style HexPlane ([64, 64, 64, T/2], multires [1, 2]) and learning rates.
    "paper": ConstructConfig(
        turn=TurnSearchConfig(enabled=False),
        init=InitConfig(num_points=10000),
        coarse=StageConfig(iterations=5000, cameras_per_step=1, static_orbit=True),
        fine=StageConfig(iterations=2000, cameras_per_step=1, static_orbit=False),
        # 4DGaussians' regulariser functionals (summed second differences; STAG4D inherited them).
        deform=DeformConfig(field=replace(_hexplane(64, 12, (1, 2)), regularizer="stag4d")),
        densify=DensifyConfig(start=500, stop=15000, every=100, reset_every=3000, grad_threshold=2e-4),
        lr=LearningRates(
            means=1.6e-4 * 2.2,
            means_final=1.6e-6 * 2.2,
            field_mlp=1.6e-4 * 2.2,
            field_mlp_final=1.6e-6 * 2.2,
            field_grid=1.6e-3 * 2.2,
            field_grid_final=1.6e-5 * 2.2,
            decay_steps=0,
        ),
        # Diffusion4D section 3.4: L1 + LPIPS + depth smoothness (the paper gives no weights;
        # LPIPS runs only where its VGG weights are on disk, and the run log says so otherwise).
        loss=LossWeights(l1=1.0, dssim=0.0, lpips=0.1, alpha=0.0, depth_smoothness=0.01),
        log_every=100,
        checkpoint_every=0,
    ),
    # The SC-GS schedule of the Diffusion4D paper (16k static + 4k dynamic steps): sparse control
    # points (512, K = 3) with ARAP, otherwise as "paper".
    "scgs": ConstructConfig(
        turn=TurnSearchConfig(enabled=False),
        init=InitConfig(num_points=10000),
        coarse=StageConfig(iterations=16000, cameras_per_step=1, static_orbit=True),
        fine=StageConfig(iterations=4000, cameras_per_step=1, static_orbit=False),
        deform=DeformConfig(field=ControlPointConfig(num_points=512, neighbours=3)),
        densify=DensifyConfig(start=500, stop=15000, every=100, reset_every=3000, grad_threshold=2e-4),
        lr=LearningRates(
            means=1.6e-4 * 2.2,
            means_final=1.6e-6 * 2.2,
            field_mlp=1.6e-4 * 2.2,
            field_mlp_final=1.6e-6 * 2.2,
            decay_steps=0,
        ),
        loss=LossWeights(l1=1.0, dssim=0.0, lpips=0.1, alpha=0.0, depth_smoothness=0.01, arap=1e-2),
        log_every=100,
        checkpoint_every=0,
    ),
    # CPU-sized (a few minutes on 2 cores with the reference rasteriser).
    "demo": ConstructConfig(
        turn=TurnSearchConfig(enabled=False),
        size=96,
        tile_size=8,
        init=InitConfig(num_points=3000),
        coarse=StageConfig(iterations=200, cameras_per_step=2, static_orbit=True),
        fine=StageConfig(iterations=400, cameras_per_step=2, static_orbit=False),
        deform=DeformConfig(field=_hexplane(24, 12, (1, 2), features=16)),
        densify=DensifyConfig(start=100, stop=400, every=100, reset_every=0, prune_opacity=0.01, max_gaussians=12000),
        lr=LearningRates(means=3e-3, means_final=3e-5),
        loss=LossWeights(),  # 4DGS-style: no rigidity term (its deform config draws no anchors)
        log_every=10,
        checkpoint_every=100,
        output=OutputConfig(video_frames=72, video_size=192),
    ),
}
DEFAULT_PRESET = "default"


def preset(name: str) -> ConstructConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def with_iterations(config: ConstructConfig, coarse: int, fine: int) -> ConstructConfig:
    """The same config with other stage lengths."""
    return replace(config, coarse=replace(config.coarse, iterations=coarse), fine=replace(config.fine, iterations=fine))
