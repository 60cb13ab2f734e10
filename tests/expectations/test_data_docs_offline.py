"""The GX data docs site reads offline: after a validation builds it, no page or stylesheet
refers to a remote asset (GX's templates load theirs from CDNs), and in headless Chromium the
index lists the validations without a single network request."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expectations.report.data_docs import MARKER, make_site_offline, offline_page
from moovitamix.connection_url import ConnectionURL
from tests.expectations import chromium
from tests.expectations.conftest import Validator
from tests.expectations.seed import seed_clean

RUN = "20261126T100000Z-cccccc"
SUITES = 7
REMOTE = r"(?:https?:)?//"
# Any tag but a link (<a>) that loads from elsewhere, and any remote url() in CSS.
REMOTE_ASSET = re.compile(
    rf"<(?!a\b)[a-z]+\b[^>]*\b(?:src|href|srcset|data)\s*=\s*[\"']?\s*{REMOTE}"
    rf"|url\(\s*[\"']?\s*{REMOTE}|@import\s+[\"']?{REMOTE}",
    re.IGNORECASE,
)
GX_HEAD = """<html><head><title>x</title>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<style>.navbar-brand a { background: url('https://example.com/logo.png') 0 0; }</style>
</head><body><img src="https://great-expectations-web-assets.s3.amazonaws.com/logo-long.png?d=1">
<a href="https://greatexpectations.io">GX</a></body></html>"""


def remote_assets(site: Path) -> dict[str, list[str]]:
    found = {}
    for path in [*site.rglob("*.html"), *site.rglob("*.css")]:
        hits = REMOTE_ASSET.findall(path.read_text(encoding="utf-8"))
        if hits:
            found[str(path.relative_to(site))] = hits
    return found


def test_a_page_loses_its_remote_assets_and_keeps_its_links(tmp_path: Path) -> None:
    (tmp_path / "static" / "images").mkdir(parents=True)
    (tmp_path / "static" / "images" / "logo-long.png").write_bytes(b"png")
    page = tmp_path / "validations" / "suite" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(GX_HEAD)
    assert REMOTE_ASSET.search(GX_HEAD)  # the check sees each kind
    assert make_site_offline(tmp_path) == 1
    text = page.read_text()
    assert not REMOTE_ASSET.search(text) and MARKER in text
    assert 'src="../../static/images/logo-long.png"' in text
    assert '<a href="https://greatexpectations.io">' in text  # a link loads nothing
    assert offline_page(text, tmp_path, page) == text and make_site_offline(tmp_path) == 0


@pytest.mark.integration
def test_the_built_site_has_no_remote_assets_and_its_index_renders_offline(
    fresh_warehouse: ConnectionURL, validate: Validator, tmp_path: Path
) -> None:
    seed_clean(fresh_warehouse, RUN)
    outcome = validate(fresh_warehouse, RUN, build_docs=True)
    assert outcome.data_docs is not None and outcome.data_docs.is_file()
    site = outcome.data_docs.parent
    assert len(list(site.rglob("*.html"))) > SUITES  # the index, suites, results
    assert remote_assets(site) == {}
    dom, requests = chromium.dump_dom(outcome.data_docs, tmp_path / "chromium")
    assert requests == []
    # the index's tables, drawn from their data by the inline script: one row per result
    assert dom.count('class="clickable-row"') >= 2 * SUITES  # results and suites
    assert "raw.ingestion" in dom and "marts.day_over_day" in dom
