"""The report page: one self-contained HTML file (no request leaves it; it opens from
file://) with the grid of eval by model, a chart of each eval's headline metric per model
(inline SVG made here), and each eval's samples, filtered and paged by a little script."""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any

from oaievalset.compare import Comparison, grid_rows
from oaievalset.records import Sample

PAGE_SIZE = 50  # samples shown at once in the drill-down
COLORS = ("#3b6fd4", "#d4793b", "#3ba35a", "#a33b8f", "#8f8f2a", "#2a8f8f")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone one cannot be written as UTF-8


def render(comparison: Comparison, title: str) -> str:
    data = {
        "title": title,
        "models": comparison.models,
        "evals": [
            {
                "name": name,
                "cells": {
                    model: _cell_data(comparison, model, name)
                    for model in comparison.models
                    if comparison.cell(model, name) is not None
                },
            }
            for name in comparison.evals
        ],
        "pageSize": PAGE_SIZE,
    }
    page = _PAGE.format(
        title=html.escape(title),
        grid=_grid_html(comparison),
        chart=_chart_svg(comparison),
        notes="".join(f"<li>{html.escape(n)}</li>" for n in comparison.notes),
        data=_script_json(data),
        style=_STYLE,
        script=_SCRIPT,
    )
    return _SURROGATE.sub("\ufffd", page)


def _script_json(data: Any) -> str:
    """JSON that cannot end or change its <script> element whatever the text in it:
    `<` (so no `</script>` and no `<!--`, which would make the parser swallow the next
    script), `>` and `&` escaped, and lone surrogates, which UTF-8 cannot carry. These
    characters only occur inside JSON strings, where the escapes mean the same."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _cell_data(comparison: Comparison, model: str, name: str) -> dict[str, Any]:
    cell = comparison.cell(model, name)
    assert cell is not None
    record = cell.record
    return {
        "status": cell.status,
        "metric": cell.metric,
        "value": cell.value if cell.value is not None and math.isfinite(cell.value) else None,
        "samples": [_sample_row(s) for s in record.samples] if record else [],
        "problems": list(record.problems) if record else ["no record: the eval has not completed"],
        "record": str(record.path) if record and record.path.name else None,
    }


def _sample_row(sample: Sample) -> list[Any]:
    """[id, prompt, answer, ideal, correct, error, score], compact for large records."""
    return [
        sample.id,
        _text(sample.prompt),
        _text(sample.answer),
        _text(sample.ideal),
        sample.correct,
        sample.error,
        _text(sample.score) if sample.score is not None else None,
    ]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content')}" for m in value)
    return json.dumps(value, ensure_ascii=False)


def _grid_html(comparison: Comparison) -> str:
    header, rows = grid_rows(comparison)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows[:-1]:
        name = row[0]
        cells = []
        for model, text in zip(comparison.models, row[1:]):
            cell = comparison.cell(model, name)
            status = cell.status if cell else "not run"
            tokens = f"{cell.usage.total_tokens:,} tokens" if cell and cell.usage else ""
            took = f"{cell.duration:.1f} s" if cell and cell.duration is not None else ""
            detail = " · ".join(x for x in (tokens, took) if x)
            cells.append(
                f'<td class="cell s-{html.escape(status.replace(" ", "-"))}" '
                f'data-model="{html.escape(model)}">{html.escape(text)}'
                f'<div class="detail">{html.escape(detail)}</div></td>'
            )
        body.append(
            f'<tr><th class="eval"><a href="#" data-eval="{html.escape(name)}">'
            f"{html.escape(name)}</a></th>{''.join(cells)}</tr>"
        )
    totals = "".join(f"<td>{html.escape(t)}</td>" for t in rows[-1][1:])
    body.append(f'<tr class="totals"><th>{html.escape(rows[-1][0])}</th>{totals}</tr>')
    return f'<table id="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _chart_svg(comparison: Comparison) -> str:
    """A bar per model for each eval's headline metric, scaled to the largest value."""
    models, evals = comparison.models, comparison.evals
    values = [
        c.value for c in comparison.cells.values() if c.value is not None and math.isfinite(c.value)
    ]
    if not values:
        return "<p>No metric to chart yet.</p>"
    top = max(1.0, max(values))
    bar, gap, label_width, height = 14, 10, 260, 0
    parts = []
    for name in evals:
        parts.append(
            f'<text x="0" y="{height + bar}" class="label">{html.escape(name[:40])}</text>'
        )
        for i, model in enumerate(models):
            cell = comparison.cell(model, name)
            value = cell.value if cell and cell.value is not None else None
            y = height + i * bar
            if value is not None and math.isfinite(value):
                width = max(1.0, 400 * value / top)
                parts.append(
                    f'<rect x="{label_width}" y="{y}" width="{width:.1f}" height="{bar - 2}" '
                    f'fill="{COLORS[i % len(COLORS)]}"><title>{html.escape(model)}: '
                    f"{value:.4g}</title></rect>"
                    f'<text x="{label_width + width + 4:.1f}" y="{y + bar - 3}" class="value">'
                    f"{value:.3g}</text>"
                )
        height += bar * len(models) + gap
    legend = "".join(
        f'<span class="key"><i style="background:{COLORS[i % len(COLORS)]}"></i>'
        f"{html.escape(m)}</span>"
        for i, m in enumerate(models)
    )
    return (
        f'<div class="legend">{legend}</div><svg id="chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{label_width + 460}" height="{height}" role="img">{"".join(parts)}</svg>'
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top}
#grid td.cell{min-width:120px}.detail{color:#777;font-size:12px}
.s-failed,.s-timed-out,.s-incomplete{background:#fde8e8}.s-done{background:#eef8ee}
.totals{font-weight:bold;background:#f6f6f6}
svg text.label{font-size:12px}svg text.value{font-size:11px;fill:#444}
.legend .key{margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;
margin-right:4px}
#samples td{max-width:420px;white-space:pre-wrap;word-break:break-word}
tr.wrong td{background:#fdf1f1}tr.errored td{background:#fff6dd}
#controls{margin:8px 0}#controls label{margin-right:12px}.problems{color:#a33}
"""

_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("data").textContent);
  var view = document.getElementById("drill");
  var state = {eval: null, model: null, other: null, filter: "all", page: 0};

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function find(name) {
    for (var i = 0; i < data.evals.length; i++) {
      if (data.evals[i].name === name) return data.evals[i];
    }
    return null;
  }
  function rows() {
    var ev = find(state.eval), cell = ev.cells[state.model];
    var list = cell ? cell.samples : [];
    var other = state.other && ev.cells[state.other] ? ev.cells[state.other].samples : null;
    var byId = {};
    if (other) other.forEach(function (s) { byId[s[0]] = s; });
    return list.filter(function (s) {
      if (state.filter === "wrong") return s[4] === false;
      if (state.filter === "errored") return !!s[5];
      if (state.filter === "disagree") {
        var o = byId[s[0]];
        return !!o && (o[4] !== s[4] || o[6] !== s[6]);
      }
      return true;
    }).map(function (s) { return [s, byId[s[0]] || null]; });
  }
  function select(name, values, current, onChange) {
    var s = el("select"); s.name = name;
    values.forEach(function (v) {
      var o = el("option", v[1]); o.value = v[0]; if (v[0] === current) o.selected = true;
      s.appendChild(o);
    });
    s.addEventListener("change", function () { onChange(s.value); });
    return s;
  }
  function draw() {
    view.textContent = "";
    if (!state.eval) return;
    var ev = find(state.eval);
    view.appendChild(el("h2", "Samples of " + ev.name));
    var models = data.models.filter(function (m) { return ev.cells[m]; });
    var controls = el("div", null); controls.id = "controls";
    var pick = el("label", "Model "); controls.appendChild(pick);
    pick.appendChild(select("model", models.map(function (m) { return [m, m]; }), state.model,
      function (v) { state.model = v; state.page = 0; draw(); }));
    if (models.length > 1) {
      var against = el("label", " compared with "); controls.appendChild(against);
      against.appendChild(select("other", [["", "-"]].concat(models.filter(function (m) {
        return m !== state.model; }).map(function (m) { return [m, m]; })), state.other || "",
        function (v) { state.other = v || null; state.page = 0; draw(); }));
    }
    var filters = [["all", "all"], ["wrong", "wrong"], ["errored", "errored"]];
    if (state.other) filters.push(["disagree", "where they disagree"]);
    var show = el("label", " Show "); controls.appendChild(show);
    show.appendChild(select("filter", filters, state.filter,
      function (v) { state.filter = v; state.page = 0; draw(); }));
    view.appendChild(controls);
    var cell = ev.cells[state.model];
    (cell ? cell.problems : []).forEach(function (p) { view.appendChild(el("p", p, "problems")); });
    var list = rows(), size = data.pageSize;
    var pages = Math.max(1, Math.ceil(list.length / size));
    state.page = Math.min(state.page, pages - 1);
    var nav = el("div", list.length + " sample(s), page " + (state.page + 1) + " of " +
      pages + " ");
    nav.id = "pager";
    [["previous", -1], ["next", 1]].forEach(function (b) {
      var button = el("button", b[0]); button.name = b[0];
      button.disabled = state.page + b[1] < 0 || state.page + b[1] >= pages;
      button.addEventListener("click", function () { state.page += b[1]; draw(); });
      nav.appendChild(button);
    });
    view.appendChild(nav);
    var table = el("table"); table.id = "samples";
    var head = el("tr");
    var columns = ["sample", "prompt", "answer", "ideal", "correct", "score"];
    if (state.other) columns = columns.concat(["answer of " + state.other, "correct"]);
    columns.forEach(function (h) { head.appendChild(el("th", h)); });
    table.appendChild(head);
    list.slice(state.page * size, (state.page + 1) * size).forEach(function (pair) {
      var s = pair[0], o = pair[1];
      var tr = el("tr", null, s[5] ? "errored" : (s[4] === false ? "wrong" : ""));
      tr.dataset.sample = s[0];
      [s[0], s[1], s[2], s[3], s[4] === null ? "-" : (s[4] ? "yes" : "no"),
       s[5] ? "error: " + s[5] : (s[6] || "")].forEach(function (v, i) {
        var td = el("td", v); if (i === 4) td.className = "correct"; tr.appendChild(td); });
      if (state.other) {
        tr.appendChild(el("td", o ? o[2] : "(not run)"));
        tr.appendChild(el("td", o ? (o[4] === null ? "-" : (o[4] ? "yes" : "no")) : "-"));
      }
      table.appendChild(tr);
    });
    view.appendChild(table);
  }
  document.querySelectorAll("a[data-eval]").forEach(function (a) {
    a.addEventListener("click", function (e) {
      e.preventDefault();
      var ev = find(a.dataset.eval);
      state.eval = ev.name;
      state.model = data.models.filter(function (m) { return ev.cells[m]; })[0] || null;
      state.other = null; state.filter = "all"; state.page = 0;
      draw();
      view.scrollIntoView();
    });
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title><style>{style}</style></head>
<body>
<h1>{title}</h1>
<h2>Results</h2>
{grid}
<ul class="notes">{notes}</ul>
<h2>Headline metric per eval</h2>
{chart}
<div id="drill"><p>Click an eval to see its samples.</p></div>
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body></html>
"""
