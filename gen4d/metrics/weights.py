"""Finding metric network weights on disk (gen4d never downloads them itself).

Search order for a weight file ``name`` (e.g. ``vgg16-397923af.pth``):

1. an explicit path passed by the caller (a file, or a directory holding ``name``);
2. ``$GEN4D_WEIGHTS_DIR/name`` (one folder for every metric's weights);
3. torch hub's checkpoint cache, ``$TORCH_HOME/hub/checkpoints/name`` (default
   ``~/.cache/torch/hub/checkpoints``) - where torchvision puts the files it downloads, so a
   machine that ever ran torchvision's pretrained VGG / AlexNet already has them.

A missing file raises :class:`MissingWeightsError`, whose message says what to download and
where to put it; ``gen4d eval`` catches it and lists the metric as skipped with that message.

Models named by a Hugging Face hub id (Zero123++, Zero-1-to-3, the video models) go through
:func:`resolve_hub_model` first: on a machine without internet (``HF_HUB_OFFLINE`` set, or the hub
not reachable within 2 s) it answers at once with the cached copy or with how to fetch the weights
elsewhere, instead of half a minute of retries ending in "does not appear to have a file named ...".
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "MissingWeightsError",
    "WEIGHTS_ENV",
    "find_weights",
    "search_dirs",
    "hub_offline_reason",
    "resolve_hub_model",
]

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


HUB_TIMEOUT_S = 2.0
_reachable_hosts: set[str] = set()  # hosts that answered once in this process


def hub_offline_reason(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be used now (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
    set, or no TCP connection to the hub within ``timeout`` seconds), or None when it can."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    if host in _reachable_hosts:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        return f"{host}:{port} is not reachable ({type(err).__name__}: {err})".replace(" ()", "")
    _reachable_hosts.add(host)
    return None


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or huggingface_hub missing): the caller explains
        return None


def resolve_hub_model(source: str, what: str) -> str | Path:
    """``source`` unchanged when it is a local path or the hub can be reached; offline, the cached
    snapshot of hub id ``source``, else a :class:`MissingWeightsError` saying how to download the
    weights on a connected machine and pass the folder."""
    if Path(source).expanduser().exists() or source.startswith((".", "/", "~")):
        return source
    reason = hub_offline_reason()
    if reason is None:
        return source
    cached = _cached_snapshot(source)
    if cached is not None:
        return cached
    folder = source.split("/")[-1] or "weights"
    raise MissingWeightsError(
        f"{what} {source!r}: not a local folder, and the Hugging Face hub cannot be used here ({reason}). "
        f"On a machine with internet run `huggingface-cli download {source} --local-dir {folder}`, copy {folder}/ "
        "here and pass its path instead of the hub id."
    )
