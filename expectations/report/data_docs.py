"""The GX data docs site, made readable offline.

GX 1.x pages load jQuery, Bootstrap, bootstrap-table, Font Awesome and Vega from CDNs and have no
setting for local assets (GX issues #994, #8734). After each build every page loses its remote
tags and gets, inline, a small stylesheet and a stand-in for the jQuery/bootstrap-table calls
the pages make (the index's tables drawn as plain HTML). Idempotent; links (<a href>) stay.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

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

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       margin: 0; padding: 0 1em 2em; }
.container, .container-fluid { max-width: 1200px; margin: 0 auto; padding-top: 1em; }
nav.navbar { border-bottom: 1px solid #ddd; padding: 0.5em 0; margin-bottom: 1em; }
.navbar-brand img { height: 32px; visibility: visible !important; }
footer { display: none; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f7; }
tr.clickable-row { cursor: pointer; }
tr.clickable-row:hover { background: #eaf2f8; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em 1em; margin: 0 0 1em; }
.nav { list-style: none; padding: 0; display: flex; gap: 1.5em; }
.tab-pane { margin-bottom: 2em; }
.text-success { color: #1e8449; } .text-danger { color: #c0392b; }
.text-warning { color: #b9770e; } .text-muted { color: #777; }
.d-none, .sr-only, .modal, .tooltip, .btn, button { display: none; }
.fas, .far, .fab, .fa { font-style: normal; }
.fa-check-circle::before, .fa-check::before { content: "\\2714"; }
.fa-times-circle::before, .fa-times::before { content: "\\2716"; }
.fa-exclamation-triangle::before { content: "\\26A0"; }
"""

# The part of jQuery / bootstrap-table the GX pages call; anything else is a harmless no-op.
SCRIPT = """
(function () {
  "use strict";
  if (window.jQuery) { return; }
  function esc(text) {
    return String(text).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function onReady(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", function () { fn(jq); });
    } else { fn(jq); }
  }
  function visible(column) { return column.visible !== false && column.visible !== "false"; }
  function sortRows(rows, columns, options) {
    if (!options.sortName) { return rows; }
    var column = columns.filter(function (c) { return c.field === options.sortName; })[0];
    var key = (column && column.sortName) || options.sortName;
    var order = options.sortOrder === "desc" ? -1 : 1;
    return rows.slice().sort(function (a, b) {
      return a[key] < b[key] ? -order : (a[key] > b[key] ? order : 0);
    });
  }
  function renderTable(table, options) {
    var columns = (options.columns || []).filter(visible);
    var rows = sortRows(options.data || [], columns, options);
    var head = columns.map(function (c) { return "<th>" + esc(c.title || c.field) + "</th>"; });
    var body = rows.map(function (row) {
      var link = row._table_row_link_path;
      var cells = columns.map(function (c) {
        var value = row[c.field];
        return "<td>" + (value === undefined || value === null ? "" : String(value)) + "</td>";
      });
      var attributes = link ? ' class="clickable-row" data-href="' + esc(link) + '"' : "";
      return "<tr" + attributes + ">" + cells.join("") + "</tr>";
    });
    table.innerHTML = "<thead><tr>" + head.join("") + "</tr></thead><tbody>" +
      body.join("") + "</tbody>";
    table.addEventListener("click", function (event) {
      var row = event.target.closest("tr[data-href]");
      if (row && !event.target.closest("a")) { window.location.href = row.dataset.href; }
    });
  }
  function wrap(nodes) {
    var api = {
      length: nodes.length,
      bootstrapTable: function (options) {
        if (options && typeof options === "object") {
          nodes.forEach(function (n) { renderTable(n, options); });
        }
        return self;
      },
      ready: function (fn) { onReady(fn); return self; },
      fadeIn: function () { nodes.forEach(function (n) { n.style.display = ""; }); return self; },
      fadeOut: function () {
        nodes.forEach(function (n) { n.style.display = "none"; }); return self;
      },
      parent: function () {
        return wrap(nodes.map(function (n) { return n.parentElement; }).filter(Boolean));
      },
      data: function (key) { return nodes.length ? nodes[0].getAttribute("data-" + key) : null; }
    };
    var self = new Proxy(api, {
      get: function (target, key) {
        return key in target ? target[key] : function () { return self; };
      }
    });
    return self;
  }
  function jq(selector) {
    if (typeof selector === "function") { onReady(selector); return wrap([]); }
    if (typeof selector !== "string") { return wrap(selector ? [selector] : []); }
    try { return wrap(Array.prototype.slice.call(document.querySelectorAll(selector))); }
    catch (error) { return wrap([]); }
  }
  jq.fn = {};
  window.jQuery = window.$ = jq;
  window.vegaEmbed = function (target) {
    var node = typeof target === "string" ? document.querySelector(target) : target;
    if (node) { node.textContent = "(chart not drawn: Vega is not available offline)"; }
    return Promise.resolve();
  };
})();
"""


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
    inline = f"{MARKER}\n<style>{CSS}</style>\n<script>{SCRIPT}</script>\n"
    head = HEAD.search(text)
    if head is None:
        return inline + text
    return text[: head.end()] + "\n" + inline + text[head.end() :]


def offline_stylesheet(text: str) -> str:
    return REMOTE_CSS_URL.sub("none", text)


def _rewrite(path: Path, transform: Callable[[str], str]) -> bool:
    text = path.read_text(encoding="utf-8")
    new = transform(text)
    if new == text:
        return False
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(new, encoding="utf-8")
    partial.replace(path)
    return True


def make_site_offline(site: Path) -> int:
    """Rewrite the site under `site` (its index.html's directory); the pages changed."""
    if not site.is_dir():
        return 0
    changed = 0
    for page in site.rglob("*.html"):
        changed += _rewrite(page, lambda text, page=page: offline_page(text, site, page))
    for sheet in site.rglob("*.css"):
        changed += _rewrite(sheet, offline_stylesheet)
    if changed:
        log.debug("data docs: %d file(s) made readable offline under %s", changed, site)
    return changed
