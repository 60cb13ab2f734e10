"""The GX data docs site made readable offline: GX loads jQuery, Bootstrap and friends from CDNs
and has no setting for local ones (GX issues #994, #8734), so every page loses its remote tags
and gets offline_docs.css and offline_docs.js inline. Idempotent; links (<a href>) stay."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from expectations.report import write_atomically

log = logging.getLogger(__name__)

MARKER = "<!-- moovitamix: offline data docs -->"
REMOTE = r"(?:https?:)?//"  # http://, https:// and protocol-relative //
REMOTE_TAG = re.compile(
    rf"<script\b[^>]*\bsrc=[\"']{REMOTE}[^\"']*[\"'][^>]*>\s*</script>\s*"
    rf"|<link\b[^>]*\bhref=[\"']{REMOTE}[^\"']*[\"'][^>]*>\s*",
    re.IGNORECASE,
)
REMOTE_IMG = re.compile(rf"(<img\b[^>]*\bsrc=)([\"']){REMOTE}([^\"']*)\2", re.IGNORECASE)
REMOTE_CSS_URL = re.compile(rf"url\(\s*[\"']?{REMOTE}[^)]*\)", re.IGNORECASE)
HEAD = re.compile(r"<head\b[^>]*>", re.IGNORECASE)

ASSETS = Path(__file__).resolve().parent  # offline_docs.css and offline_docs.js


def _stand_ins() -> str:
    """The inline stylesheet and script that stand in for the remote assets."""
    css, js = (ASSETS.joinpath(f"offline_docs.{ext}").read_text("utf-8") for ext in ("css", "js"))
    return f"{MARKER}\n<style>{css}</style>\n<script>{js}</script>\n"


def _local_image(site: Path, page: Path, url: str) -> str:
    """The copy of a remote image GX ships in static/images/, relative to `page`; else none."""
    name = Path(urlparse(f"//{url}").path).name
    local = site / "static" / "images" / name
    if name and local.is_file():
        return Path(os.path.relpath(local, page.parent)).as_posix()
    return "data:,"


def offline_page(text: str, site: Path, page: Path) -> str:
    """One page of the site without remote assets, with the inline stand-ins."""
    if MARKER in text:
        return text
    text = REMOTE_TAG.sub("", text)
    text = REMOTE_IMG.sub(lambda m: f"{m[1]}{m[2]}{_local_image(site, page, m[3])}{m[2]}", text)
    text = REMOTE_CSS_URL.sub("none", text)
    inline = _stand_ins()
    text, heads = HEAD.subn(lambda head: f"{head[0]}\n{inline}", text, count=1)
    return text if heads else inline + text


def _rewrite(path: Path, transform: Callable[[str], str]) -> bool:
    text = path.read_text(encoding="utf-8")
    new = transform(text)
    if new != text:
        write_atomically(path, new)
    return new != text


def make_site_offline(site: Path) -> int:
    """Rewrite the site under `site` (its index.html's directory); the pages changed."""
    if not site.is_dir():
        return 0
    changed = 0
    for page in site.rglob("*.html"):
        changed += _rewrite(page, lambda text, page=page: offline_page(text, site, page))
    for sheet in site.rglob("*.css"):
        changed += _rewrite(sheet, lambda text: REMOTE_CSS_URL.sub("none", text))
    if changed:
        log.debug("data docs: %d file(s) made readable offline under %s", changed, site)
    return changed
