"""gen4d: video, image, text or static 3D -> 4D assets (dynamic 3D Gaussians)."""

__version__ = "0.1.0"
