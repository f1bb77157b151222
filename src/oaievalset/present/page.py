"""The report page: an HTML file and a folder beside it (`report.html`, `report_files/`),
self-contained (no request leaves them; they open from file://). The page holds the grid
of eval by model, the runs (when, with which command), a chart of each eval's headline
metric per model (inline SVG made here) and the summaries; each record's samples are a
script of their own in the folder, loaded by a script element when its eval is opened
(browsers refuse `fetch` of file://, not scripts), then filtered and paged.

A record's script is named after the record's path, size and modification time: a page
written again rewrites only the scripts of records that changed, and removes the scripts
no record of it names any more."""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import math
import os
import re
import shlex
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from oaievalset.compare import Cell, Comparison
from oaievalset.present.compare import grid_rows
from oaievalset.prices import format_cost
from oaievalset.records import RecordSummary, Sample, stream_record

PAGE_SIZE = 50  # samples shown at once in the drill-down
SAMPLES_VERSION = 1  # of the samples' scripts: raised when a row changes, so all are rewritten
# Tableau's ten colours, told apart by most eyes; generated hues after them.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#79706e")  # fmt: skip
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone one cannot be written as UTF-8
_BREAK_AFTER = re.compile(r"(?<=[./_:-])")  # where a name may wrap: never inside a word


def color(index: int) -> str:
    """The colour of the index-th model: the palette, then hues the golden angle apart."""
    if index < len(PALETTE):
        return PALETTE[index]
    step = index - len(PALETTE)
    lightness = (42, 58, 34)[step % 3]
    return f"hsl({(step * 137.508 + 20) % 360:.1f} 62% {lightness}%)"


class SampleFiles:
    """The folder beside a page (`report_files/` for `report.html`) that holds a script
    per record: `oaievalsetSamples(ID, [rows...])`."""

    def __init__(self, page: Path) -> None:
        self.folder = page.with_name(f"{page.stem}_files")
        self.href = quote(self.folder.name)  # relative to the page
        self.named: set[str] = set()  # the scripts the page being written names
        # Folders of other pages whose scripts this page may share (a comparison takes the
        # runs' own): the same name is the same record in the same state.
        self.sources: list[Path] = []

    def name(self, path: Path, size: int, mtime_ns: int) -> str:
        """The script of this state of the record."""
        key = f"{SAMPLES_VERSION}\0{path}\0{size}\0{mtime_ns}"
        return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:20]

    def sink_for(self, path: Path, size: int, mtime_ns: int) -> _Script | None:
        """Where the samples of a record being read go (compare.compare asks for one per
        record it reads). A folder that cannot be written is left to `ensure`, which tries
        again and lets the error reach whoever writes the page."""
        try:
            return _Script(self.folder, self.name(path, size, mtime_ns))
        except OSError:
            return None

    def ensure(self, summary: RecordSummary) -> str | None:
        """The record's script, written when the folder lacks it (reading the record), or
        None when the record had no file."""
        if summary.size < 0:
            return None
        name = self.name(summary.path, summary.size, summary.mtime_ns)
        self.named.add(name)
        if not (self.folder / f"{name}.js").exists() and not self._share(name):
            script = _Script(self.folder, name)
            stream_record(summary.path, script.add)
            script.finish()
        return name

    def _share(self, name: str) -> bool:
        """Another page's script of the record, linked here (copied where links cannot
        be): the folder stays whole by itself, and the record is not read again."""
        import shutil

        for folder in self.sources:
            found = folder / f"{name}.js"
            if not found.is_file():
                continue
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{name}.js.{os.getpid()}.tmp"
            with contextlib.suppress(OSError):
                tmp.unlink()
            try:
                try:
                    os.link(found, tmp)
                except OSError:  # another filesystem, or no links there
                    shutil.copyfile(found, tmp)
                os.replace(tmp, self.folder / f"{name}.js")
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                continue
            return True
        return False

    def prune(self) -> None:
        """Remove the scripts the page no longer names (records replaced by later runs)."""
        if not self.folder.is_dir():
            return
        for script in self.folder.glob("*.js"):
            if script.stem not in self.named:
                with contextlib.suppress(OSError):
                    script.unlink()


class _Script:
    """A record's samples' script, written a row at a time to a temporary sibling, then
    renamed: whole or not at all. A row that cannot be written (a full disk) leaves no
    script, and the page's writer says so."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{name}.js"
        self.tmp = folder / f".{name}.js.{os.getpid()}.tmp"
        self.out: IO[str] | None = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115
        self.out.write(f'oaievalsetSamples("{name}", [')
        self.first = True

    def add(self, sample: Sample) -> None:
        if self.out is None:
            return
        try:
            self.out.write(("" if self.first else ",\n") + _script_json(_sample_row(sample)))
        except OSError:
            self._drop()
        self.first = False

    def close(self) -> None:
        """The script complete, as far as it could be written (`finish` says if not)."""
        with contextlib.suppress(OSError):
            self.finish()

    def finish(self) -> None:
        if self.out is None:
            raise OSError(f"could not write {self.path}")
        try:
            self.out.write("]);\n")
            self.out.close()
            os.replace(self.tmp, self.path)
        except OSError:
            self._drop()
            raise
        self.out = None

    def _drop(self) -> None:
        if self.out is not None:
            with contextlib.suppress(OSError):
                self.out.close()
            self.out = None
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def write(path: Path, comparison: Comparison, title: str, files: SampleFiles | None = None) -> None:
    """The page at `path` and its samples' scripts beside it: the scripts first, so that the
    page never names one that is not there yet."""
    from oaievalset.files import atomic_write

    files = files or SampleFiles(path)
    text = render(comparison, title, files)
    atomic_write(path, text)
    files.prune()


def render(comparison: Comparison, title: str, files: SampleFiles) -> str:
    """The page's HTML; each record's script is written into `files` if it is not there."""
    data = {
        "title": title,
        "models": comparison.models,
        "evals": [
            {
                "name": name,
                "cells": {
                    model: _cell_data(comparison, model, name, files)
                    for model in comparison.models
                    if comparison.cell(model, name) is not None
                },
            }
            for name in comparison.evals
        ],
        "pageSize": PAGE_SIZE,
        "files": files.href,
    }
    page = _PAGE.format(
        title=html.escape(title),
        metric=_metric_caption(comparison),
        summary=_summary_html(comparison),
        controls=_controls_html(comparison),
        grid=_grid_html(comparison),
        runs=_runs_html(comparison),
        chart_title=html.escape(_chart_title(comparison)),
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


def _cell_data(comparison: Comparison, model: str, name: str, files: SampleFiles) -> dict[str, Any]:
    cell = comparison.cell(model, name)
    assert cell is not None
    record = cell.record
    command = record.command if record else None
    return {
        "status": cell.status,
        "metric": cell.metric,
        "value": cell.value if cell.value is not None and math.isfinite(cell.value) else None,
        "samples": files.ensure(record) if record else None,  # the script that has them
        "n": record.samples if record else 0,
        "problems": list(record.problems) if record else ["no record: the eval has not completed"],
        "record": str(record.path) if record and record.path.name else None,
        "command": [shlex.quote(w) for w in command] if command else None,  # quoted words
        "when": _when(record.created_at) if record else None,
    }


def _sample_row(sample: Sample) -> list[Any]:
    """[id, prompt, answer, ideal, correct, error, score], compact for large records; a
    prompt or answer the record does not hold is null."""
    return [
        sample.id,
        _text(sample.prompt) if sample.prompt is not None else None,
        _text(sample.answer) if sample.answer is not None else None,
        _ideal_text(sample.ideal),
        sample.correct,
        sample.error,
        score_text(sample.score),
    ]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(f"{m.get('role', '?')}: {_text(m.get('content'))}" for m in value)
    return json.dumps(value, ensure_ascii=False)


def _ideal_text(ideal: Any) -> str:
    """The ideal answer, or each of them on a line of its own."""
    if isinstance(ideal, list) and len(ideal) == 1 and isinstance(ideal[0], str):
        return ideal[0]
    if isinstance(ideal, list) and ideal and all(isinstance(i, str) for i in ideal):
        return "\n".join(f"\u2022 {i}" for i in ideal)
    return _text(ideal)


def score_text(score: Any) -> str | None:
    """A sample's score as a reader wants it: `f1 0.67`, `choice Y, score 1`."""
    if score is None:
        return None
    if not isinstance(score, dict):
        return _text(score)
    parts = []
    if "choice" in score:
        parts.append(f"choice {_text(score['choice'])}")
    for key, value in score.items():
        if key == "choice":
            continue
        label = "f1" if key == "f1_score" else key
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{label} {value:.2f}".rstrip("0").rstrip("."))
        elif value is not None:
            parts.append(f"{label} {_text(value)}")
    return ", ".join(parts) or None


def _when(created_at: str | None) -> str | None:
    """`2024-01-31 12:00 UTC` from a record's `created_at`, or the text as it is."""
    if not created_at:
        return None
    moment = _moment(created_at)
    if moment is None:
        return created_at
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _moment(created_at: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(created_at.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _name_html(name: str) -> str:
    """A name that wraps only after `.`, `-`, `_`, `/` or `:`, never inside a word."""
    return "<wbr>".join(html.escape(part) for part in _BREAK_AFTER.split(name))


def _metrics(comparison: Comparison) -> list[str]:
    return sorted({c.metric for c in comparison.cells.values() if c.metric})


def _row_metric(comparison: Comparison, name: str) -> str | None:
    """The headline metric most of the eval's cells show."""
    metrics = Counter(
        c.metric for m in comparison.models if (c := comparison.cell(m, name)) and c.metric
    )
    return metrics.most_common(1)[0][0] if metrics else None


def _metric_caption(comparison: Comparison) -> str:
    metrics = _metrics(comparison)
    if not metrics:
        return "No eval has a metric yet."
    named = " or ".join(f"<b>{html.escape(m)}</b>" for m in metrics)
    which = " (named under each eval)" if len(metrics) > 1 else ""
    return (
        f"Each cell shows the eval's headline metric, {named}{which}, and n, the "
        f"number of samples; then the tokens and the time. The last row is the mean of "
        f"the metrics and the sum of the tokens."
    )


def _grid_html(comparison: Comparison) -> str:
    """The grid: a row per eval, a column per model, and for two models and more a column
    of the difference between two of them (filled by the script); each cell carries its
    value and status, which the script sorts and filters by. The totals are the foot."""
    header, rows = grid_rows(comparison)
    mixed = len(_metrics(comparison)) > 1
    two = len(comparison.models) > 1
    head = [f'<th data-sort="name" title="sort by name">{html.escape(header[0])}</th>']
    for i, model in enumerate(comparison.models):
        head.append(
            f'<th class="model" data-sort="{i}" title="sort by this model\'s metric">'
            f'<i class="swatch" style="background:{color(i)}"></i>'
            f'<span class="name">{_name_html(model)}</span></th>'
        )
    if two:
        head.append('<th class="diff" data-sort="diff" title="sort by the difference">'
                    "difference</th>")  # fmt: skip
    body = []
    for row in rows[:-1]:
        name = row[0]
        metric = _row_metric(comparison, name)
        cells, statuses = [], set()
        for model, text in zip(comparison.models, row[1:]):
            cell = comparison.cell(model, name)
            status = cell.status if cell else "not run"
            statuses.add(status)
            other = cell.metric if cell and cell.metric and cell.metric != metric else ""
            tokens = f"{cell.usage.total_tokens:,} tokens" if cell and cell.usage else ""
            took = f"{cell.duration:.1f} s" if cell and cell.duration is not None else ""
            detail = " · ".join(x for x in (other, tokens, took) if x)
            tip = _cell_title(cell)
            value = cell.value if cell and cell.value is not None else None
            number = f"{value!r}" if value is not None and math.isfinite(value) else ""
            cells.append(
                f'<td class="cell s-{html.escape(status.replace(" ", "-"))}" '
                f'data-model="{html.escape(model)}" data-value="{number}"{tip}>'
                f'{html.escape(text)}<div class="detail">{html.escape(detail)}</div></td>'
            )
        if two:
            cells.append('<td class="diff"></td>')
        label = f'<div class="detail">{html.escape(metric)}</div>' if metric and mixed else ""
        body.append(
            f'<tr data-statuses="{html.escape("|".join(sorted(statuses)))}">'
            f'<th class="eval"><a href="#" class="name" data-eval="{html.escape(name)}">'
            f"{_name_html(name)}</a>{label}</th>{''.join(cells)}</tr>"
        )
    totals = "".join(f"<td>{html.escape(t)}</td>" for t in rows[-1][1:])
    totals += "<td></td>" if two else ""
    return (
        f'<table id="grid"><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody>"
        f'<tfoot><tr class="totals"><th>{html.escape(rows[-1][0])}</th>{totals}</tr></tfoot>'
        "</table>"
    )


def _controls_html(comparison: Comparison) -> str:
    """Above the grid: a search by name, a filter by status and, for two models and more,
    which two the difference column compares."""
    statuses = sorted({c.status for c in comparison.cells.values()})
    if any(comparison.cell(m, e) is None for m in comparison.models for e in comparison.evals):
        statuses.append("not run")
    options = "".join(f'<option value="{html.escape(s)}">{html.escape(s)}</option>'
                      for s in statuses)  # fmt: skip
    parts = [
        '<label>Search <input type="search" name="search" placeholder="eval name"></label>',
        f'<label>Status <select name="status"><option value="">any</option>{options}'
        "</select></label>",
    ]
    models = comparison.models
    if len(models) > 1:

        def pick(name: str, chosen: int) -> str:
            choices = "".join(
                f'<option value="{i}"{" selected" if i == chosen else ""}>{html.escape(m)}</option>'
                for i, m in enumerate(models)
            )
            return f'<select name="{name}">{choices}</select>'

        parts.append(f"<label>Difference {pick('diff-a', 1)} minus {pick('diff-b', 0)}</label>")
    parts.append('<span id="shown"></span>')
    return f'<div id="grid-controls">{"".join(parts)}</div>'


def _cell_title(cell: Cell | None) -> str:
    """A tooltip: the cell's command and when it ran."""
    record = cell.record if cell else None
    command = record.command if record else None
    when = _when(record.created_at) if record else None
    text = "\n".join(x for x in (shlex.join(command) if command else None, when) if x)
    return f' title="{html.escape(text)}"' if text else ""


def _summary_html(comparison: Comparison) -> str:
    """The head of the page: per model, its evals done and failed, the mean of the headline
    metric, the tokens and the cost."""
    metrics = _metrics(comparison)
    mean = f"mean {metrics[0]}" if len(metrics) == 1 else "mean metric"
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in ("model", "evals", "done", "failed", "other", mean, "tokens", "cost")
    )
    rows = []
    for i, model in enumerate(comparison.models):
        cells = [c for (m, _), c in comparison.cells.items() if m == model]
        agg = comparison.aggregate(model)
        failed = sum(c.status in _FAILED for c in cells)
        other = agg["evals"] - agg["done"] - failed
        reported = any(c.usage for c in cells)
        tokens = f"{agg['usage']['total_tokens']:,}" if reported else "-"
        values = [
            str(agg["evals"]),
            str(agg["done"]),
            str(failed),
            str(other),
            "-" if agg["mean"] is None else f"{agg['mean']:.3f}",
            tokens,
            format_cost(agg["cost"]),
        ]
        tds = "".join(
            f'<td class="{"bad" if n == 2 and failed else ""}">{html.escape(v)}</td>'
            for n, v in enumerate(values)
        )
        rows.append(
            f'<tr><th><i class="swatch" style="background:{color(i)}"></i>'
            f'<span class="name">{_name_html(model)}</span></th>{tds}</tr>'
        )
    return (
        f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


_FAILED = ("failed", "timed out", "incomplete")


def _runs_html(comparison: Comparison) -> str:
    """Per model: when its evals ran and the `oaievalset` command (the model, the set and
    the arguments passed through to `oaieval`), as its records give them."""
    rows = []
    for i, model in enumerate(comparison.models):
        records = [
            c.record
            for name in comparison.evals
            if (c := comparison.cell(model, name)) is not None and c.record is not None
        ]
        commands: dict[tuple[str, ...], list[str]] = {}
        for record in records:
            line = _set_command(comparison.eval_set, model, record)
            if line is not None:
                commands.setdefault(line, []).append(_eval_of(record))
        if not commands:
            shown = '<span class="missing">no record names its command</span>'
        elif len(commands) == 1:
            shown = _command_html(next(iter(commands)))
        else:  # the evals ran with other arguments: say which ran with which
            shown = "<br>".join(
                f"{_command_html(line)} <span class=detail>for "
                f"{html.escape(', '.join(evals))}</span>"
                for line, evals in commands.items()
            )
        rows.append(
            f'<tr><th><i class="swatch" style="background:{color(i)}"></i>'
            f'<span class="name">{_name_html(model)}</span></th>'
            f"<td class=when>{html.escape(_span(records))}</td><td>{shown}</td></tr>"
        )
    return (
        '<table id="runs"><thead><tr><th>model</th><th>run</th><th>command</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _set_command(eval_set: str, model: str, record: RecordSummary) -> tuple[str, ...] | None:
    """`oaievalset MODEL SET ARGS...` from the record's `oaieval MODEL EVAL ARGS...`."""
    command = record.command
    if not command:
        return None
    if len(command) >= 3 and command[1] == model:
        return ("oaievalset", model, eval_set, *command[3:])
    return tuple(command)  # not the shape oaievalset runs: show it as it is


def _command_html(command: tuple[str, ...]) -> str:
    """A command line that wraps between its arguments only (`--max_samples` stays whole)."""
    words = " ".join(f"<span>{html.escape(shlex.quote(w))}</span>" for w in command)
    return f'<code class="command">{words}</code>'


def _eval_of(record: RecordSummary) -> str:
    name = (record.spec or {}).get("eval_name")
    return str(name) if name else record.path.name


def _span(records: list[RecordSummary]) -> str:
    """When the records were made: `2024-01-31 12:00 UTC`, or a span of two times."""
    moments = [m for r in records if r.created_at and (m := _moment(r.created_at))]
    if not moments:
        return "-"
    first, last = min(moments), max(moments)
    start = first.strftime("%Y-%m-%d %H:%M")
    if last.strftime("%Y-%m-%d %H:%M") == start:
        return f"{start} UTC"
    end = last.strftime("%H:%M" if last.date() == first.date() else "%Y-%m-%d %H:%M")
    return f"{start} to {end} UTC"


def _chart_svg(comparison: Comparison) -> str:
    """For each eval, its name on a line, then a bar per model (named at its left) of the
    headline metric, scaled to the largest value."""
    models = comparison.models
    evals, cut = _charted(comparison)
    values = [
        c.value for c in comparison.cells.values() if c.value is not None and math.isfinite(c.value)
    ]
    if not values:
        return "<p>No metric to chart yet.</p>"
    top = max(1.0, max(values))
    bar, gap, line = 14, 12, 18
    # SVG text does not wrap: leave room for the longest name (about 7 px a character).
    left = 8 + 7 * max(len(m) for m in models)
    mixed = len(_metrics(comparison)) > 1
    labels = {n: _chart_label(comparison, n, mixed) for n in evals}
    width = max(left + 460, 8 + 8 * max(len(label) for label in labels.values()))
    height, parts = 0, []
    for name in evals:
        height += line
        parts.append(
            f'<text x="0" y="{height - 5}" class="label">{html.escape(labels[name])}</text>'
        )
        for i, model in enumerate(models):
            cell = comparison.cell(model, name)
            value = cell.value if cell and cell.value is not None else None
            y = height + i * bar
            parts.append(
                f'<text x="{left - 6}" y="{y + bar - 3}" class="model">{html.escape(model)}</text>'
            )
            if value is not None and math.isfinite(value):
                size = max(1.0, 400 * value / top)
                parts.append(
                    f'<rect x="{left}" y="{y}" width="{size:.1f}" height="{bar - 2}" '
                    f'fill="{color(i)}"><title>{html.escape(model)}: '
                    f"{value:.4g}</title></rect>"
                    f'<text x="{left + size + 4:.1f}" y="{y + bar - 3}" class="value">'
                    f"{value:.3g}</text>"
                )
            else:
                parts.append(
                    f'<text x="{left + 4}" y="{y + bar - 3}" class="value">'
                    f"{html.escape(cell.status if cell else 'not run')}</text>"
                )
        height += bar * len(models) + gap
    legend = "".join(
        f'<span class="key"><i class="swatch" style="background:{color(i)}"></i>'
        f"{html.escape(m)}</span>"
        for i, m in enumerate(models)
    )
    return (
        f'<div class="legend">{legend}</div>{cut}'
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" role="img">{"".join(parts)}</svg>'
    )


CHART_EACH_END = 20  # a chart of more evals than twice this shows the top and the bottom


def _charted(comparison: Comparison) -> tuple[list[str], str]:
    """The evals the chart shows: all of them, or, for a big set, the CHART_EACH_END with
    the highest mean headline value over the models and as many with the lowest (evals
    without a value left out), with a caption that says so."""
    evals = comparison.evals
    if len(evals) <= 2 * CHART_EACH_END:
        return list(evals), ""
    means = {}
    for name in evals:
        found = [
            c.value
            for m in comparison.models
            if (c := comparison.cell(m, name)) and c.value is not None and math.isfinite(c.value)
        ]
        if found:
            means[name] = sum(found) / len(found)
    position = {name: i for i, name in enumerate(evals)}
    ranked = sorted(means, key=lambda n: (-means[n], position[n]))
    if len(ranked) <= 2 * CHART_EACH_END:
        shown = ranked
    else:
        shown = ranked[:CHART_EACH_END] + ranked[-CHART_EACH_END:]
    caption = (
        f'<p class="caption" id="chart-cut">The {CHART_EACH_END} evals with the highest mean '
        f"and the {CHART_EACH_END} with the lowest, of {len(evals)} (of {len(means)} with a "
        f"value); the grid has them all, and sorts by any model.</p>"
    )
    return shown, caption


def _chart_label(comparison: Comparison, name: str, mixed: bool) -> str:
    """The eval's name, and its metric when the evals have different ones."""
    metric = _row_metric(comparison, name) if mixed else None
    return f"{name} ({metric})" if metric else name


def _chart_title(comparison: Comparison) -> str:
    metrics = _metrics(comparison)
    return "Headline metric per eval" + (f": {metrics[0]}" if len(metrics) == 1 else "")


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;
vertical-align:top}
.name{overflow-wrap:normal;word-break:normal;hyphens:manual}
#grid td.cell{min-width:120px}.detail{color:#777;font-size:12px;font-weight:normal}
.caption{color:#555;max-width:900px}
.s-failed,.s-timed-out,.s-incomplete{background:#fde8e8}.s-done{background:#eef8ee}
.totals{font-weight:bold;background:#f6f6f6}
#runs td,#runs th{font-size:13px}#runs td.when{white-space:nowrap}
code.command span{white-space:pre}
svg text.label{font-size:12px;font-weight:600}svg text.value{font-size:11px;fill:#444}
svg text.model{font-size:11px;fill:#555;text-anchor:end}
.legend .key{margin-right:14px;white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}
#samples td .text{max-width:420px;white-space:pre-wrap;overflow-wrap:break-word}
.missing{color:#999;font-style:italic}
tr.wrong td{background:#fdf1f1}tr.errored td{background:#fff6dd}
#controls{margin:8px 0}#controls label{margin-right:12px}.problems{color:#a33}
#meta{color:#555;font-size:13px}#meta code{overflow-wrap:anywhere}
#summary td{text-align:right}#summary td.bad{color:#a33;font-weight:bold}
.lead{color:#555;margin-bottom:4px}
#grid-controls{margin:8px 0}#grid-controls label{margin-right:14px}#shown{color:#777}
#grid thead th[data-sort]{cursor:pointer}#grid thead th.asc:after{content:" \\25B2"}
#grid thead th.desc:after{content:" \\25BC"}#grid tbody tr.hidden{display:none}
#grid td.diff{text-align:right;white-space:nowrap}.up{color:#2a7a2a}.down{color:#a33}
"""

_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("data").textContent);
  var view = document.getElementById("drill");
  var state = {eval: null, model: null, other: null, filter: "all", page: 0};
  var byName = {}, loaded = {}, asked = {}, failed = {};
  data.evals.forEach(function (ev) { byName[ev.name] = ev; });
  // Each record's samples are a script beside the page, run when its eval is opened.
  window.oaievalsetSamples = function (id, rows) { loaded[id] = rows; draw(); };
  function need(cell) {
    // The samples of the cell, or null while its script loads (it is asked for once).
    if (!cell || !cell.samples) return [];
    var id = cell.samples;
    if (loaded[id]) return loaded[id];
    if (!asked[id] && !failed[id]) {
      asked[id] = true;
      var script = document.createElement("script");
      script.src = data.files + "/" + id + ".js";
      script.onerror = function () { failed[id] = true; draw(); };
      document.head.appendChild(script);
    }
    return failed[id] ? [] : null;
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function nameEl(text, tag) {
    // A name wraps only after . - _ / or :, never inside a word.
    var e = el(tag || "span", null, "name");
    (String(text).match(/[^.\/_:-]*[.\/_:-]?/g) || []).forEach(function (part) {
      if (!part) return;
      if (e.childNodes.length) e.appendChild(document.createElement("wbr"));
      e.appendChild(document.createTextNode(part));
    });
    return e;
  }
  function text(value) {
    // Text of the record, or a grey note that the record does not hold it.
    if (value === null || value === undefined) {
      return el("span", "not in the record", "missing");
    }
    return document.createTextNode(value);
  }
  function find(name) { return byName[name] || null; }
  function rows(list, other) {
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
    var title = el("h2", "Samples of ");
    title.appendChild(nameEl(ev.name));
    view.appendChild(title);
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
    if (cell) {
      var meta = el("p", null); meta.id = "meta";
      [["run ", cell.when], ["command ", cell.command], ["record ", cell.record]].forEach(
        function (item) {
          if (!item[1]) return;
          if (meta.childNodes.length) meta.appendChild(document.createTextNode(" \u00b7 "));
          meta.appendChild(document.createTextNode(item[0]));
          var code = el("code", Array.isArray(item[1]) ? null : item[1]);
          if (Array.isArray(item[1])) {  // a command wraps between its words only
            code.className = "command";
            item[1].forEach(function (word, i) {
              if (i) code.appendChild(document.createTextNode(" "));
              code.appendChild(el("span", word));
            });
          }
          meta.appendChild(code);
        });
      if (meta.childNodes.length) view.appendChild(meta);
    }
    (cell ? cell.problems : []).forEach(function (p) { view.appendChild(el("p", p, "problems")); });
    var mine = need(cell), theirs = state.other ? need(ev.cells[state.other]) : null;
    var broken = false;
    [cell, state.other && ev.cells[state.other]].forEach(function (c) {
      if (c && failed[c.samples]) {
        broken = true;
        view.appendChild(el("p", "The samples' file " + data.files + "/" + c.samples +
          ".js could not be read: keep the folder " + decodeURIComponent(data.files) +
          " beside the page.", "problems"));
      }
    });
    if (broken) return;
    if (mine === null || (state.other && theirs === null)) {
      var wait = el("p", "Loading " + (cell ? cell.n : 0) + " sample(s)\u2026");
      wait.id = "loading";
      view.appendChild(wait);
      return;
    }
    var list = rows(mine, theirs), size = data.pageSize;
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
      var id = el("td", null, "name"); id.appendChild(nameEl(s[0])); tr.appendChild(id);
      [s[1], s[2], s[3], s[4] === null ? "-" : (s[4] ? "yes" : "no"),
       s[5] ? "error: " + s[5] : (s[6] || "")].forEach(function (v, i) {
        var td = el("td", null, i === 3 ? "correct" : ""), box = el("div", null, "text");
        box.appendChild(text(v)); td.appendChild(box); tr.appendChild(td);
      });
      if (state.other) {
        var theirs = el("td", null), their = el("div", null, "text");
        their.appendChild(o ? text(o[2]) : el("span", "(not run)", "missing"));
        theirs.appendChild(their); tr.appendChild(theirs);
        tr.appendChild(el("td", o ? (o[4] === null ? "-" : (o[4] ? "yes" : "no")) : "-"));
      }
      table.appendChild(tr);
    });
    view.appendChild(table);
  }
  // The grid: search by name, filter by status, sort by any column, the difference.
  var grid = document.getElementById("grid"), body = grid.tBodies[0];
  var all = Array.prototype.slice.call(body.rows);
  var search = document.querySelector("input[name=search]");
  var status = document.querySelector("select[name=status]");
  var diffA = document.querySelector("select[name=diff-a]");
  var diffB = document.querySelector("select[name=diff-b]");
  var sorted = {key: null, down: false};
  function valueOf(tr, i) {
    var text = tr.cells[1 + i].getAttribute("data-value");
    return text === "" || text === null ? null : parseFloat(text);
  }
  function differences() {
    if (!diffA) return;
    var a = +diffA.value, b = +diffB.value;
    all.forEach(function (tr) {
      var x = valueOf(tr, a), y = valueOf(tr, b), td = tr.cells[tr.cells.length - 1];
      td.className = "diff";
      if (x === null || y === null) { td.textContent = "-"; td.dataset.value = ""; return; }
      var d = x - y;
      td.dataset.value = String(d);
      td.textContent = (d > 0 ? "+" : d < 0 ? "\u2212" : "") + Math.abs(d).toFixed(3);
      if (d) td.classList.add(d > 0 ? "up" : "down");
    });
  }
  function keyOf(tr, key) {
    if (key === "name") return tr.cells[0].textContent;
    var text = key === "diff" ? tr.cells[tr.cells.length - 1].dataset.value
      : tr.cells[1 + (+key)].getAttribute("data-value");
    return text === "" || text === undefined || text === null ? null : parseFloat(text);
  }
  function arrange() {
    var rows = all.slice();
    if (sorted.key !== null) {
      var sign = sorted.down ? -1 : 1;
      rows.sort(function (r, s) {
        var x = keyOf(r, sorted.key), y = keyOf(s, sorted.key);
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);  // last
        return (x < y ? -1 : x > y ? 1 : 0) * sign;
      });
    }
    var words = search.value.trim().toLowerCase(), want = status.value, shown = 0;
    rows.forEach(function (tr) {
      var name = tr.cells[0].querySelector("a").dataset.eval.toLowerCase();
      var ok = (!words || name.indexOf(words) >= 0) &&
        (!want || tr.dataset.statuses.split("|").indexOf(want) >= 0);
      tr.classList.toggle("hidden", !ok);
      if (ok) shown++;
      body.appendChild(tr);
    });
    document.getElementById("shown").textContent = shown + " of " + all.length + " evals";
  }
  grid.tHead.querySelectorAll("th[data-sort]").forEach(function (th) {
    th.addEventListener("click", function () {
      var key = th.dataset.sort;
      // Names first A to Z, numbers first highest; a second click turns it round.
      sorted.down = sorted.key === key ? !sorted.down : key !== "name";
      sorted.key = key;
      grid.tHead.querySelectorAll("th").forEach(function (h) {
        h.classList.remove("asc", "desc");
      });
      th.classList.add(sorted.down ? "desc" : "asc");
      arrange();
    });
  });
  search.addEventListener("input", arrange);
  status.addEventListener("change", arrange);
  [diffA, diffB].forEach(function (s) {
    if (s) s.addEventListener("change", function () { differences(); arrange(); });
  });
  differences();
  document.getElementById("shown").textContent = all.length + " evals";

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
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'self'">
<title>{title}</title><style>{style}</style></head>
<body>
<h1>{title}</h1>
{summary}
<p class="lead">When each model's evals ran, and the command, as their records give it.</p>
{runs}
<h2>Results</h2>
<p class="caption">{metric}</p>
{controls}
{grid}
<ul class="notes">{notes}</ul>
<h2>{chart_title}</h2>
{chart}
<div id="drill"><p>Click an eval to see its samples.</p></div>
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body></html>
"""
