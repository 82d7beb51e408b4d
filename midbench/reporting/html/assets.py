"""The report's style sheet and script, inlined into the page (no network, no CDN)."""

CSS = """
:root { --ink: #1a1a1a; --muted: #5f6368; --rule: #d0d4d9; --flag: #fff4d6; --head: #f4f6f8; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1280px; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid var(--rule); padding-bottom: 0.2rem; }
h3 { font-size: 1.1rem; margin-top: 1.8rem; }
.muted, caption, .note { color: var(--muted); }
nav ul { columns: 2; padding-left: 1.2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; padding-bottom: 0.3rem; }
th, td { border-bottom: 1px solid var(--rule); padding: 0.25rem 0.55rem; text-align: right; white-space: nowrap; }
th { background: var(--head); position: sticky; top: 0; }
td.text, th.text { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.flagged td { background: var(--flag); }
figure { margin: 1rem 0 1.5rem; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.9rem; }
figure.examples { display: inline-block; vertical-align: top; margin: 0.5rem 1.5rem 0.5rem 0; }
table.example-grid { margin: 0.2rem 0 0.6rem; }
table.example-grid th, table.example-grid td { border: 0; padding: 1px 2px; position: static; background: none; }
table.example-grid th { font-weight: normal; color: var(--muted); font-size: 0.8rem; }
table.example-grid img { display: block; width: 56px; height: 56px; image-rendering: pixelated; }
dl.provenance { display: grid; grid-template-columns: max-content auto; gap: 0.1rem 1rem; }
dl.provenance dt { color: var(--muted); }
dl.provenance dd { margin: 0; word-break: break-all; }
pre { background: var(--head); padding: 0.6rem 0.8rem; overflow-x: auto; }
.flag-list li code { font-weight: 600; }
"""

#: click a header to sort its table's rows by it (numbers by the value in data-sort, the rest as text); again to
#: reverse. Rows keep their order among equal keys (Array.prototype.sort is stable).
SCRIPT = """
(function () {
  function key(cell) {
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { return cell.textContent.trim().toLowerCase(); }
    return raw === "" ? null : Number(raw);
  }
  function compare(a, b, descending) {
    if (a === null && b === null) { return 0; }
    if (a === null) { return 1; }
    if (b === null) { return -1; }
    var order = a < b ? -1 : (a > b ? 1 : 0);
    return descending ? -order : order;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (header, column) {
      header.setAttribute("tabindex", "0");
      header.setAttribute("title", "sort by this column");
      function sort() {
        var descending = header.getAttribute("aria-sort") === "ascending";
        Array.prototype.forEach.call(headers, function (other) { other.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", descending ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r, s) { return compare(key(r.cells[column]), key(s.cells[column]), descending); });
        rows.forEach(function (row) { body.appendChild(row); });
      }
      header.addEventListener("click", sort);
      header.addEventListener("keydown", function (event) { if (event.key === "Enter") { sort(); } });
    });
  });
})();
"""
