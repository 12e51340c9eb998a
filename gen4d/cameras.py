"""Cameras: gen4d's one camera convention, pose builders and conversions.

Convention (used everywhere inside gen4d)
-----------------------------------------
* **World**: right-handed, **Z up** (Blender's world). An object's *front* faces **-Y**: the
  front camera sits on the -Y axis looking towards +Y (Blender's "front" view, and the
  Diffusion4D renders' orbit pose 0).
* **Camera**: OpenCV: x right, y down, z forward (the viewing direction). A camera is a
  ``world_to_camera`` 4x4 matrix plus pinhole intrinsics ``fx, fy, cx, cy`` in pixels and the
  image ``width, height``. Pixel ``(u, v)`` covers ``[u, u+1) x [v, v+1)``; its centre is at
  ``(u + 0.5, v + 0.5)`` (gsplat's convention), so a centred principal point is ``cx = W / 2``.
* **Time**: every camera carries ``t`` in [0, 1], the normalised time of the image it sees.
* **Spherical poses** (orbits, Zero123++ sets): ``elevation`` in degrees above the XY plane;
  ``azimuth`` in degrees, 0 at the front (camera on -Y), increasing **counter-clockwise seen
  from above** (+90 puts the camera on +X). Position
  ``r * (cos(el) sin(az), -cos(el) cos(az), sin(el))``; the camera looks at the target with
  world +Z as up.

The Diffusion4D sample (Blender, 50 mm lens on a 36 mm sensor, distance 2, pose i at
``angle = 2 pi (1 - i/23)``, camera at ``-2 (sin angle, cos angle, 0)``) is exactly
``orbit(elevations=0, azimuths=360 * i / 23, radius=2, fov=39.6)``:
see :func:`diffusion4d_orbit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, replace
from typing import Literal

import torch

from gen4d._checks import check_finite, check_shape

__all__ = [
    "Cameras",
    "look_at",
    "spherical_to_position",
    "focal_from_fov",
    "orbit",
    "diffusion4d_orbit",
    "ZERO123PP_AZIMUTHS",
    "ZERO123PP_ELEVATIONS",
    "zero123pp_poses",
    "zero123_pose_embedding",
    "from_blender_camera_to_world",
    "to_blender_camera_to_world",
]

# OpenGL / Blender camera axes (x right, y up, z backward) <-> OpenCV (x right, y down, z forward).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass(frozen=True)
class Cameras:
    """A batch of C pinhole cameras in gen4d's convention (see the module docstring).

    Shapes: ``world_to_camera`` (C, 4, 4); ``fx, fy, cx, cy, times`` (C,).

    Construction checks shapes and values (finite poses, focal lengths > 0, times in [0, 1]); the
    value checks read the tensors back to the host (a device sync), so batches derived from
    checked cameras (indexing, :meth:`to`, :meth:`cat`, :meth:`resized`) skip them.
    """

    world_to_camera: torch.Tensor
    """(C, 4, 4) rigid world-to-camera transforms, OpenCV axes."""
    fx: torch.Tensor
    """(C,) focal length along x, pixels (> 0)."""
    fy: torch.Tensor
    """(C,) focal length along y, pixels (> 0)."""
    cx: torch.Tensor
    """(C,) principal point x, pixels (image centre = width / 2)."""
    cy: torch.Tensor
    """(C,) principal point y, pixels."""
    width: int
    """Image width in pixels, shared by the batch."""
    height: int
    """Image height in pixels, shared by the batch."""
    times: torch.Tensor
    """(C,) normalised time in [0, 1] of each camera's image."""
    check_values: InitVar[bool] = True
    """Also check the values (host syncs); False only for cameras derived from checked ones."""

    def __post_init__(self, check_values: bool = True) -> None:
        check_shape("cameras.world_to_camera", self.world_to_camera, ("C", 4, 4))
        count = self.world_to_camera.shape[0]
        for name in ("fx", "fy", "cx", "cy", "times"):
            check_shape(f"cameras.{name}", getattr(self, name), (count,))
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"cameras.width/height: expected positive ints, got {self.width}x{self.height}")
        if check_values:
            self._check_values()

    def _check_values(self) -> None:
        check_finite("cameras.world_to_camera", self.world_to_camera)
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if not bool((value > 0).all()):
                raise ValueError(f"cameras.{name}: focal lengths must be > 0, got {value.tolist()}")
        times = self.times
        if not bool(((times >= 0) & (times <= 1)).all()):
            raise ValueError(f"cameras.times: expected values in [0, 1], got {times.tolist()}")

    # -- batch handling -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.world_to_camera.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> Cameras:
        if isinstance(index, int):
            index = [index]
        pick = lambda x: x[index]  # noqa: E731
        return replace(
            self,
            world_to_camera=pick(self.world_to_camera),
            fx=pick(self.fx),
            fy=pick(self.fy),
            cx=pick(self.cx),
            cy=pick(self.cy),
            times=pick(self.times),
            check_values=False,
        )

    @staticmethod
    def cat(batches: Sequence[Cameras]) -> Cameras:
        """Concatenate batches that share an image size."""
        if not batches:
            raise ValueError("Cameras.cat: expected at least one batch")
        sizes = {(b.width, b.height) for b in batches}
        if len(sizes) != 1:
            raise ValueError(f"Cameras.cat: image sizes differ ({sorted(sizes)}); expected one size")
        return Cameras(
            world_to_camera=torch.cat([b.world_to_camera for b in batches]),
            fx=torch.cat([b.fx for b in batches]),
            fy=torch.cat([b.fy for b in batches]),
            cx=torch.cat([b.cx for b in batches]),
            cy=torch.cat([b.cy for b in batches]),
            width=batches[0].width,
            height=batches[0].height,
            times=torch.cat([b.times for b in batches]),
            check_values=False,
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        tensors = (self.world_to_camera, self.fx, self.fy, self.cx, self.cy, self.times)
        if (device is None or torch.device(device) == self.world_to_camera.device) and (
            dtype is None or all(x.dtype == dtype for x in tensors)
        ):
            return self  # already there (every render call asks; a new batch would be checked again)
        move = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
        return replace(
            self,
            world_to_camera=move(self.world_to_camera),
            fx=move(self.fx),
            fy=move(self.fy),
            cx=move(self.cx),
            cy=move(self.cy),
            times=move(self.times),
            check_values=False,
        )

    def with_times(self, times: torch.Tensor | float) -> Cameras:
        """The same poses at other times (a float sets every camera's time)."""
        if not isinstance(times, torch.Tensor):
            times = torch.full_like(self.times, float(times))
        return replace(self, times=times.to(self.times))

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras for images resampled to ``width x height``."""
        sx, sy = width / self.width, height / self.height
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
            width=width,
            height=height,
            check_values=False,
        )

    # -- derived quantities ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.world_to_camera.device

    @property
    def intrinsics(self) -> torch.Tensor:
        """(C, 3, 3) pinhole matrices K."""
        K = torch.zeros(len(self), 3, 3, dtype=self.fx.dtype, device=self.device)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = self.fx, self.fy, self.cx, self.cy, 1.0
        return K

    @property
    def camera_to_world(self) -> torch.Tensor:
        """(C, 4, 4) inverse of ``world_to_camera`` (OpenCV axes)."""
        return torch.linalg.inv(self.world_to_camera)

    @property
    def centers(self) -> torch.Tensor:
        """(C, 3) camera centres in world space."""
        R, t = self.world_to_camera[:, :3, :3], self.world_to_camera[:, :3, 3]
        return -(R.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)

    @property
    def fov_x_deg(self) -> torch.Tensor:
        return torch.rad2deg(2 * torch.atan(0.5 * self.width / self.fx))

    @property
    def fov_y_deg(self) -> torch.Tensor:
        return torch.rad2deg(2 * torch.atan(0.5 * self.height / self.fy))

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points (P, 3) -> pixel coordinates (C, P, 2) and depths (C, P).

        Pixel coordinates are continuous: the centre of pixel (u, v) is (u + 0.5, v + 0.5).
        """
        check_shape("points", points, (None, 3))
        R, t = self.world_to_camera[:, :3, :3], self.world_to_camera[:, :3, 3]
        cam = torch.einsum("cij,pj->cpi", R, points.to(R)) + t[:, None, :]
        z = cam[..., 2]
        u = self.fx[:, None] * cam[..., 0] / z + self.cx[:, None]
        v = self.fy[:, None] * cam[..., 1] / z + self.cy[:, None]
        return torch.stack([u, v], dim=-1), z


# ---------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------
def _as_tensor(values, count: int | None = None, dtype=torch.float32) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=dtype).reshape(-1)
    if count is not None and tensor.numel() == 1:
        tensor = tensor.expand(count).clone()
    return tensor


def look_at(eyes: torch.Tensor, targets: torch.Tensor, up: Sequence[float] = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """World-to-camera (C, 4, 4) OpenCV matrices for cameras at ``eyes`` (C, 3) looking at
    ``targets`` (C, 3) with ``up`` as the world up direction (image y points away from it)."""
    check_shape("eyes", eyes, ("C", 3))
    check_shape("targets", targets, ("C", 3))
    up_vec = torch.as_tensor(up, dtype=eyes.dtype, device=eyes.device).expand_as(eyes)
    forward = torch.nn.functional.normalize(targets - eyes, dim=-1)
    right = torch.cross(forward, up_vec, dim=-1)
    degenerate = right.norm(dim=-1) < 1e-6
    if bool(degenerate.any()):
        # Looking straight along the up axis: any right vector orthogonal to forward works;
        # pick world +X so poses stay deterministic.
        fallback = torch.tensor([1.0, 0.0, 0.0], dtype=eyes.dtype, device=eyes.device).expand_as(eyes)
        right = torch.where(degenerate[:, None], fallback - (fallback * forward).sum(-1, keepdim=True) * forward, right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.cross(forward, right, dim=-1)
    rotation = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world coordinates
    world_to_camera = torch.eye(4, dtype=eyes.dtype, device=eyes.device).repeat(eyes.shape[0], 1, 1)
    world_to_camera[:, :3, :3] = rotation
    world_to_camera[:, :3, 3] = -(rotation @ eyes.unsqueeze(-1)).squeeze(-1)
    return world_to_camera


def spherical_to_position(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Camera positions (C, 3) for gen4d's spherical convention (module docstring)."""
    el, az = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [radius * torch.cos(el) * torch.sin(az), -radius * torch.cos(el) * torch.cos(az), radius * torch.sin(el)],
        dim=-1,
    )


def focal_from_fov(fov_deg: float | torch.Tensor, size: int) -> torch.Tensor:
    """Focal length in pixels for a field of view (degrees) spanning ``size`` pixels."""
    return torch.as_tensor(0.5 * size, dtype=torch.float32) / torch.tan(
        torch.deg2rad(torch.as_tensor(fov_deg, dtype=torch.float32)) / 2
    )


def _pinhole(fov_deg: torch.Tensor, width: int, height: int, fov_axis: Literal["x", "y", "larger"]):
    if fov_axis == "larger":
        fov_axis = "x" if width >= height else "y"
    focal = focal_from_fov(fov_deg, width if fov_axis == "x" else height)
    return focal, focal.clone()


def orbit(
    elevations_deg: float | Sequence[float] | torch.Tensor,
    azimuths_deg: float | Sequence[float] | torch.Tensor,
    radius: float | Sequence[float] | torch.Tensor = 2.0,
    fov_deg: float | Sequence[float] | torch.Tensor = 39.6,
    width: int = 256,
    height: int = 256,
    times: float | Sequence[float] | torch.Tensor = 0.0,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    fov_axis: Literal["x", "y", "larger"] = "larger",
) -> Cameras:
    """Cameras on a sphere around ``target`` looking at it (gen4d spherical convention).

    Scalars broadcast against the longest of elevations / azimuths / radius / fov / times.
    ``fov_axis`` says which image side the field of view spans ("larger" = Blender's AUTO
    sensor fit).
    """
    parts = [_as_tensor(v) for v in (elevations_deg, azimuths_deg, radius, fov_deg, times)]
    count = max(p.numel() for p in parts)
    for name, p in zip(("elevations_deg", "azimuths_deg", "radius", "fov_deg", "times"), parts):
        if p.numel() not in (1, count):
            raise ValueError(f"orbit: {name} has {p.numel()} values; expected 1 or {count}")
    el, az, rad, fov, t = (p.expand(count).clone() if p.numel() == 1 else p for p in parts)
    if bool((rad <= 0).any()):
        raise ValueError(f"orbit: radius must be > 0, got {rad.tolist()}")
    if bool(((fov <= 0) | (fov >= 180)).any()):
        raise ValueError(f"orbit: fov_deg must be in (0, 180), got {fov.tolist()}")
    centre = torch.as_tensor(target, dtype=torch.float32).expand(count, 3)
    eyes = spherical_to_position(el, az, rad) + centre
    fx, fy = _pinhole(fov, width, height, fov_axis)
    return Cameras(
        world_to_camera=look_at(eyes, centre),
        fx=fx,
        fy=fy,
        cx=torch.full((count,), width / 2.0),
        cy=torch.full((count,), height / 2.0),
        width=width,
        height=height,
        times=t,
    )


def diffusion4d_orbit(num_views: int = 24, size: int = 256, static: bool = False) -> Cameras:
    """The Diffusion4D orbit (README of the sample): view i at azimuth 360 i/(T-1), time i/(T-1)
    (``static``: every view at time 0). Distance 2, elevation 0, FOV 2 atan(18/50)."""
    if num_views < 2:
        raise ValueError(f"diffusion4d_orbit: num_views must be >= 2, got {num_views}")
    steps = torch.arange(num_views, dtype=torch.float32) / (num_views - 1)
    fov = math.degrees(2 * math.atan(18.0 / 50.0))
    times = torch.zeros_like(steps) if static else steps
    return orbit(0.0, 360.0 * steps, 2.0, fov, size, size, times)


# Zero123++ (Shi et al. 2023): 6 views in a 3x2 grid, row-major order; azimuths relative to the
# input view, elevations absolute.
ZERO123PP_AZIMUTHS = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
ZERO123PP_ELEVATIONS = {
    "v1.1": (30.0, -20.0, 30.0, -20.0, 30.0, -20.0),
    "v1.2": (20.0, -10.0, 20.0, -10.0, 20.0, -10.0),
}
ZERO123PP_V12_FOV = 30.0


def zero123pp_poses(
    version: Literal["v1.1", "v1.2"] = "v1.2",
    input_azimuth_deg: float = 0.0,
    radius: float = 2.0,
    input_fov_deg: float = 49.1,
    size: int = 320,
    time: float = 0.0,
    azimuth_direction: Literal[1, -1] = 1,
) -> Cameras:
    """The six Zero123++ output cameras for an input view at ``input_azimuth_deg``.

    v1.1 keeps the input's field of view and distance; v1.2 renders with a fixed 30 degree
    field of view, and its object-size normalisation is reproduced by moving the camera to
    ``radius * tan(input_fov / 2) / tan(15 deg)`` so the object keeps its apparent size.
    ``azimuth_direction`` = +1 adds the relative azimuths counter-clockwise (gen4d's azimuth
    direction), -1 clockwise.
    """
    if version not in ZERO123PP_ELEVATIONS:
        raise ValueError(f"zero123pp_poses: version must be 'v1.1' or 'v1.2', got {version!r}")
    azimuths = [input_azimuth_deg + azimuth_direction * a for a in ZERO123PP_AZIMUTHS]
    elevations = ZERO123PP_ELEVATIONS[version]
    if version == "v1.1":
        fov, dist = input_fov_deg, radius
    else:
        fov = ZERO123PP_V12_FOV
        dist = radius * math.tan(math.radians(input_fov_deg) / 2) / math.tan(math.radians(fov) / 2)
    return orbit(elevations, azimuths, dist, fov, size, size, time)


def zero123_pose_embedding(
    target_elevation_deg: torch.Tensor,
    target_azimuth_deg: torch.Tensor,
    target_radius: torch.Tensor,
    cond_elevation_deg: torch.Tensor | float = 0.0,
    cond_azimuth_deg: torch.Tensor | float = 0.0,
    cond_radius: torch.Tensor | float = 2.0,
) -> torch.Tensor:
    """Zero-1-to-3 relative pose embedding (B, 4): [delta polar (rad), sin(delta azimuth),
    cos(delta azimuth), delta radius], polar = 90 deg - elevation."""
    el_t, az_t, r_t = (
        torch.as_tensor(v, dtype=torch.float32).reshape(-1)
        for v in (target_elevation_deg, target_azimuth_deg, target_radius)
    )
    el_c, az_c, r_c = (
        torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (cond_elevation_deg, cond_azimuth_deg, cond_radius)
    )
    delta_polar = torch.deg2rad((90.0 - el_t) - (90.0 - el_c))
    delta_az = torch.deg2rad(az_t - az_c)
    delta_r = r_t - r_c
    delta_polar, delta_az, delta_r = torch.broadcast_tensors(delta_polar, delta_az, delta_r)
    return torch.stack([delta_polar, torch.sin(delta_az), torch.cos(delta_az), delta_r], dim=-1)


# ---------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------
def from_blender_camera_to_world(
    camera_to_world: torch.Tensor,
    fov_deg: float | Sequence[float] | torch.Tensor,
    width: int,
    height: int,
    times: float | Sequence[float] | torch.Tensor = 0.0,
    fov_axis: Literal["x", "y", "larger"] = "larger",
) -> Cameras:
    """Cameras from Blender / OpenGL camera-to-world matrices (C, 4, 4) (camera looks down its
    -Z, +Y up) and field of view in degrees (Blender's ``camera.data.angle``, which spans the
    larger image side with the default AUTO sensor fit)."""
    check_shape("camera_to_world", camera_to_world, ("C", 4, 4))
    count = camera_to_world.shape[0]
    c2w_cv = camera_to_world.to(torch.float64) @ _GL_TO_CV
    world_to_camera = torch.linalg.inv(c2w_cv).to(torch.float32)
    fx, fy = _pinhole(_as_tensor(fov_deg, count), width, height, fov_axis)
    return Cameras(
        world_to_camera=world_to_camera,
        fx=fx,
        fy=fy,
        cx=torch.full((count,), width / 2.0),
        cy=torch.full((count,), height / 2.0),
        width=width,
        height=height,
        times=_as_tensor(times, count),
    )


def to_blender_camera_to_world(cameras: Cameras) -> torch.Tensor:
    """Blender / OpenGL camera-to-world matrices (C, 4, 4) for gen4d cameras."""
    c2w_cv = torch.linalg.inv(cameras.world_to_camera.to(torch.float64))
    return (c2w_cv @ _GL_TO_CV).to(torch.float32)
