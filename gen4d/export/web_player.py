"""The web player: a standalone page that plays a ``.splat4d`` asset with WebGL2.

``gen4d/export/player/`` holds the page (``index.html``; ``splat4d.js`` decodes, ``render.js`` draws,
``player.js`` runs the page): copied as is, it opens a ``.splat4d`` file from its file picker, by drag
and drop, or from ``?src=URL`` when served over HTTP. :func:`player_html` makes one self-contained page instead: the scripts inlined and
the asset embedded as base64, so it opens from ``file://`` without a server (browsers refuse
``fetch`` from ``file://`` pages). A page gen4d wrote carries the ``generator`` tag
:data:`GENERATOR`; :func:`is_player_html` looks for it, so exports overwrite only their own pages.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from gen4d.export.splat4d import MAGIC
from gen4d.io import atomic_path

__all__ = ["PLAYER_DIR", "GENERATOR", "player_html", "write_player_html", "is_player_html", "embedded_asset"]

PLAYER_DIR = Path(__file__).with_name("player")
"""The player's files (package data)."""
GENERATOR = '<meta name="generator" content="gen4d-player/1">'
"""The tag that marks a page gen4d wrote (within its first kilobyte)."""
_ASSET_SLOT = "<!-- gen4d:asset -->"
_SCRIPT = re.compile(r'<script src="([a-z0-9_]+\.js)"></script>')


def player_html(asset: bytes, name: str = "asset.splat4d") -> str:
    """One self-contained player page with ``asset`` (the bytes of a ``.splat4d`` file) embedded."""
    if not asset.startswith(MAGIC):
        raise ValueError(f"player_html: the asset is not a .splat4d file (it does not start with {MAGIC!r})")
    page = (PLAYER_DIR / "index.html").read_text(encoding="utf-8")
    if page.count(_ASSET_SLOT) != 1 or GENERATOR not in page[:1024]:
        raise RuntimeError(f"{PLAYER_DIR / 'index.html'}: damaged player template (asset slot or generator tag)")

    def inline(match: re.Match) -> str:
        code = (PLAYER_DIR / match.group(1)).read_text(encoding="utf-8")
        if "</script" in code.lower():
            raise RuntimeError(f"{match.group(1)}: contains '</script', which would end the inlined script")
        return f"<script>\n{code}</script>"

    page, inlined = _SCRIPT.subn(inline, page)
    if inlined == 0:
        raise RuntimeError(f"{PLAYER_DIR / 'index.html'}: no player scripts to inline")
    encoded = base64.b64encode(asset).decode("ascii")
    tag = f'<script id="gen4d-asset" type="application/octet-stream" data-name="{html.escape(name)}">{encoded}</script>'
    return page.replace(_ASSET_SLOT, tag)


def write_player_html(asset: bytes, path: str | os.PathLike, name: str | None = None) -> Path:
    """Write :func:`player_html` of ``asset`` to ``path`` atomically."""
    path = Path(path)
    page = player_html(asset, name or path.with_suffix(".splat4d").name)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def is_player_html(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a player page gen4d wrote (its generator tag in the first kilobyte)."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return GENERATOR.encode() in handle.read(1024)


def embedded_asset(path: str | os.PathLike) -> bytes:
    """The ``.splat4d`` bytes embedded in a player page written by :func:`write_player_html`."""
    text = Path(path).read_text(encoding="utf-8")
    found = re.search(r'<script id="gen4d-asset"[^>]*>([A-Za-z0-9+/=]*)</script>', text)
    if found is None:
        raise ValueError(f"{path}: no embedded .splat4d asset (not a bundled gen4d player page)")
    return base64.b64decode(found.group(1))
