// The part of jQuery / bootstrap-table the GX data docs pages call, so they render offline
// (expectations/report/data_docs.py); anything else is a harmless no-op.
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
