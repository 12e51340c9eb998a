"""Exports of 4D assets: per-frame PLY sequences, orbit videos (mp4, gif)."""

from gen4d.export.ply_sequence import frame_times, write_ply_sequence
from gen4d.export.video import mp4_available, orbit_sweep, to_uint8, write_gif, write_mp4, write_video

__all__ = [
    "frame_times",
    "write_ply_sequence",
    "orbit_sweep",
    "mp4_available",
    "to_uint8",
    "write_mp4",
    "write_gif",
    "write_video",
]
