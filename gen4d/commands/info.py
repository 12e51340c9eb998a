"""``gen4d info``: versions, device, usable backends and extras."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform

NAME = "info"
HELP = "print versions, the compute device, usable rendering backends and installed extras"

EXTRAS = {
    "cuda": ["gsplat"],
    "diffusion": ["diffusers", "transformers", "accelerate"],
    "render": ["bpy"],
    "metrics": ["lpips", "transformers"],
    "viewer": ["viser"],
    "matting": ["rembg", "onnxruntime"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect() -> dict:
    import torch

    from gen4d import __version__
    from gen4d.render import available_backends

    cuda = torch.cuda.is_available()
    info = {
        "gen4d": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "cuda": torch.version.cuda if cuda else None,
        "backends": available_backends(),
        "default_backend": "gsplat" if available_backends()["gsplat"] else "torch",
        "extras": {},
    }
    for extra, packages in EXTRAS.items():
        found = {p: _version(p) for p in packages}
        info["extras"][extra] = {"usable": all(v is not None for v in found.values()), "packages": found}
    return info


def run(args: argparse.Namespace) -> int:
    info = collect()
    print(f"gen4d {info['gen4d']}  python {info['python']}  torch {info['torch']}")
    print(f"device: {info['device']}" + (f" (CUDA {info['cuda']})" if info["cuda"] else ""))
    backends = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["backends"].items())
    print(f"render backends: {backends}; default: {info['default_backend']}")
    for extra, state in info["extras"].items():
        pkgs = ", ".join(f"{p} {v or 'missing'}" for p, v in state["packages"].items())
        mark = "usable" if state["usable"] else f"not installed (pip install 'gen4d[{extra}]')"
        print(f"extra {extra:9s} {mark}: {pkgs}")
    return 0
