"""Where the GX file context and its generated data docs site live (no GX import needed)."""

from __future__ import annotations

from pathlib import Path

GX_DIR = Path(__file__).resolve().parent / "gx"


def data_docs_site(gx_dir: Path = GX_DIR) -> Path:
    return gx_dir / "uncommitted" / "data_docs" / "local_site"


def data_docs_index(gx_dir: Path = GX_DIR) -> Path:
    return data_docs_site(gx_dir) / "index.html"
