"""Finding metric network weights on disk (gen4d never downloads them itself).

Search order for a weight file ``name`` (e.g. ``vgg16-397923af.pth``):

1. an explicit path passed by the caller (a file, or a directory holding ``name``);
2. ``$GEN4D_WEIGHTS_DIR/name`` (one folder for every metric's weights);
3. torch hub's checkpoint cache, ``$TORCH_HOME/hub/checkpoints/name`` (default
   ``~/.cache/torch/hub/checkpoints``) - where torchvision puts the files it downloads, so a
   machine that ever ran torchvision's pretrained VGG / AlexNet already has them.

A missing file raises :class:`MissingWeightsError`, whose message says what to download and
where to put it; ``gen4d eval`` catches it and lists the metric as skipped with that message.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MissingWeightsError", "WEIGHTS_ENV", "find_weights", "search_dirs"]

WEIGHTS_ENV = "GEN4D_WEIGHTS_DIR"


class MissingWeightsError(FileNotFoundError):
    """A metric's pretrained weights are not on this machine; the message says how to provide them."""


def search_dirs() -> list[Path]:
    """Folders searched for weight files, in order."""
    dirs = []
    if os.environ.get(WEIGHTS_ENV):
        dirs.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    try:
        import torch.hub

        dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    except Exception:  # pragma: no cover - torch always has hub
        pass
    return dirs


def find_weights(name: str, what: str, url: str | None = None, path: str | os.PathLike | None = None) -> Path:
    """Path of weight file ``name`` (see the module docstring for the search order).

    what: a human description for the error ("LPIPS-vgg backbone (torchvision VGG16, ImageNet)").
    url: where the file can be downloaded (on a machine with internet), for the error message.
    path: explicit file or folder; when given, only it is searched.
    """
    if path is not None:
        path = Path(path).expanduser()
        candidate = path / name if path.is_dir() else path
        if candidate.is_file():
            return candidate
        raise MissingWeightsError(
            f"{what}: no weight file at {candidate}" + (f" (expected {name}; download it from {url})" if url else "")
        )
    for folder in search_dirs():
        if (folder / name).is_file():
            return folder / name
    where = " or ".join(str(d / name) for d in search_dirs())
    fetch = f"download {url} (on a machine with internet) and " if url else "obtain it and "
    raise MissingWeightsError(
        f"{what}: weight file {name} not found; {fetch}put it at {where} "
        f"(or set ${WEIGHTS_ENV} to a folder holding it, or pass its path explicitly)"
    )
