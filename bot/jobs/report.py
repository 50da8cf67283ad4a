"""The export report: one self-contained HTML page, a JSON summary and a chat-sized text."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from bot.core.errors import describe_error, explain
from bot.core.timefmt import MINUTES, labelled, local_time, when_long, zone_label
from bot.core.wording import plural

CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI","PingFang SC","Microsoft YaHei",
"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC",sans-serif;
margin:2em auto;max-width:60em;color:#1d1d1f;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
.muted{color:#666}.big{font-size:2em;font-weight:600}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;
padding:.6em 1em;min-width:9em}.up{color:#b00020}.down{color:#0a7d32}
table{border-collapse:collapse;margin:.4em 0}td,th{border-bottom:1px solid #eee;
padding:.2em .8em;text-align:left}th{background:#f6f6f6}td.n{text-align:right}
code{font:12px ui-monospace,Menlo,Consolas,monospace}ul.ids{columns:2;font-size:12px}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.4em .8em}
svg text{font-size:10px;fill:#444}svg line{stroke:#999;stroke-width:1}
.attention{border:2px solid #b00020;border-radius:6px;padding:.2em 1em;margin:1em 0;
background:#fff5f5}.attention h2{border:0;margin-top:.5em;color:#b00020}
.calm{border:1px solid #0a7d32;border-radius:6px;padding:.4em 1em;color:#0a7d32}
"""


@dataclass(frozen=True, slots=True)
class Finding:
    """One reconciliation check: how many OpenIDs it flags and the first few."""

    name: str
    title: str
    count: int
    sample: list[str]


@dataclass
class ReportData:
    """Everything one report shows; built from the database, rendered without I/O."""

    day: str
    timezone: str
    taken_at: int
    total: int
    previous_day: str | None = None
    previous_total: int | None = None
    previous_taken_at: int | None = None
    added: tuple[int, list[str]] | None = None
    removed: tuple[int, list[str]] | None = None
    window: tuple[int, int] = (0, 0)
    actions: list[tuple[str, str, int]] = field(default_factory=list)
    failures: list[tuple[str, int | None, str, int]] = field(default_factory=list)
    rule_hits: list[tuple[str, str, int]] = field(default_factory=list)
    hourly: list[int] = field(default_factory=lambda: [0] * 24)
    hourly_start: int = 0  # unix time the first hour of ``hourly`` starts (oldest first)
    paused_until: float = 0.0  # sending paused (45009, credentials...) when the report ran
    paused_reason: str = ""
    failed: list[tuple[str, str, int | None, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def change(self) -> int | None:
        """Net change of the total since the previous snapshot."""
        return None if self.previous_total is None else self.total - self.previous_total

    @property
    def paused(self) -> bool:
        """Sending was paused when the report was built."""
        return self.paused_until > 0

    @property
    def same_day(self) -> bool:
        """Compared with an earlier export of the same day (the run this one replaced)."""
        return self.previous_day == self.day

    def since_text(self) -> str:
        """What the change is measured against, in words."""
        if self.previous_day is None:
            return "first export, nothing to compare with"
        if self.same_day and self.previous_taken_at:
            return f"the earlier export today, {self.when(self.previous_taken_at)}"
        return f"the {self.previous_day} export"

    def change_text(self) -> str:
        """``+3 since the earlier export today, ...`` (or why there is no change)."""
        if self.change is None:
            return self.since_text()
        return f"{self.change:+d} since {self.since_text()}"

    def when(self, ts: float) -> str:
        """``ts`` as local time in the export's time zone."""
        return labelled(ts, self.timezone, MINUTES)


def summary_json(data: ReportData) -> dict[str, Any]:
    """The machine-readable summary written beside the HTML report."""
    def listed(part: tuple[int, list[str]] | None) -> dict[str, Any] | None:
        return None if part is None else {"count": part[0], "sample": part[1]}

    return {
        "day": data.day, "timezone": data.timezone, "taken_at": data.taken_at,
        "total": data.total,
        "previous": None if data.previous_day is None else
        {"day": data.previous_day, "total": data.previous_total,
         "taken_at": data.previous_taken_at, "same_day": data.same_day},
        "change": data.change, "added": listed(data.added), "removed": listed(data.removed),
        "window": {"since": data.window[0], "until": data.window[1]},
        "actions": [{"kind": k, "status": s, "count": n} for k, s, n in data.actions],
        "failures": [{"kind": k, "errcode": c, "errmsg": m, "count": n}
                     for k, c, m, n in data.failures],
        "rule_hits": [{"rule_id": r, "action": a, "count": n} for r, a, n in data.rule_hits],
        "decisions_per_hour": list(data.hourly),
        "decisions_per_hour_order": "oldest first: one count per hour, the first hour "
                                    "starting at decisions_per_hour_start",
        "decisions_per_hour_start": data.hourly_start or None,
        "decisions_per_hour_first": (labelled(data.hourly_start, data.timezone, MINUTES)
                                     if data.hourly_start else None),
        "sending": {"paused": data.paused, "paused_until": data.paused_until or None,
                    "resume_at": when_long(data.paused_until, data.timezone)
                    if data.paused else None, "reason": data.paused_reason or None},
        "failed_openids": [{"kind": k, "openid": o, "errcode": c, "errmsg": m}
                           for k, o, c, m in data.failed],
        "findings": [{"name": f.name, "title": f.title, "count": f.count, "sample": f.sample}
                     for f in data.findings],
        "notes": list(data.notes),
    }


def summary_text(data: ReportData) -> str:
    """A few lines for a chat robot (WeCom group): totals, change, failures, findings."""
    lines = [f"Blacklist export {data.day}: {data.total} OpenIDs"]
    if data.change is not None:
        lines[0] += f" ({data.change_text()})"
    if data.added is not None and data.removed is not None:
        lines.append(f"added {data.added[0]}, removed {data.removed[0]}")
    failed = sum(n for _k, _c, _m, n in data.failures)
    done = sum(n for _k, s, n in data.actions if s == "done")
    lines.append(f"actions done {done}, failed {failed}")
    lines.extend(f"{f.title}: {f.count}" for f in data.findings if f.count)
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML


def render_html(data: ReportData) -> str:
    """The report page: inline CSS and SVG only, every value HTML-escaped."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Blacklist report {escape(data.day)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body>",
        f"<h1>Blacklist report {escape(data.day)}</h1>",
        f'<p class="muted">Snapshot taken {escape(data.when(data.taken_at))} '
        f"({escape(data.timezone)}); activity since {escape(data.when(data.window[0]))}.</p>",
        _attention(data),
        *(f'<p class="warn">{escape(n)}</p>' for n in data.notes),
        _cards(data), _changes(data), _actions(data), _rules(data), _chart(data),
        _findings(data), "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _cards(data: ReportData) -> str:
    change = data.change
    cls = "" if not change else (" up" if change > 0 else " down")
    shown = "n/a" if change is None else f"{change:+d}"
    since = f"since {escape(data.since_text())}" if data.previous_day else "(first export)"
    added = "n/a" if data.added is None else str(data.added[0])
    removed = "n/a" if data.removed is None else str(data.removed[0])
    return (
        '<div class="cards">'
        f'<div class="card">Blacklisted<div class="big" id="total">{data.total}</div></div>'
        f'<div class="card">Change {since}<div class="big{cls}" id="change">{shown}</div></div>'
        f'<div class="card">Added<div class="big" id="added">{added}</div></div>'
        f'<div class="card">Removed<div class="big" id="removed">{removed}</div></div></div>'
    )


def _id_list(title: str, key: str, part: tuple[int, list[str]] | None, rest: str) -> str:
    """A counted list of OpenIDs; ``rest`` says where the unlisted ones are, if anywhere."""
    if part is None:
        return f"<h2>{title}</h2><p class=\"muted\">No earlier snapshot to compare with.</p>"
    count, sample = part
    html = f'<h2>{title} <span class="muted" id="{key}-count">({count})</span></h2>'
    if not count:
        return html + '<p class="muted">None.</p>'
    items = "".join(f"<li><code>{escape(o)}</code></li>" for o in sample)
    more = count - len(sample)
    tail = f'<p class="muted">... and {more} more{escape(rest)}.</p>' if more > 0 else ""
    return html + f'<ul class="ids" id="{key}-list">{items}</ul>{tail}'


def _changes(data: ReportData) -> str:
    # The day's CSV holds every OpenID now blacklisted, so the added ones too; the removed
    # ones are in no file this export writes (the JSON summary has the same sample).
    shown = len(data.removed[1]) if data.removed else 0
    return (_id_list("Added since the previous export", "added", data.added,
                     f" (all are in blacklist-{data.day}.csv, among the rest)")
            + _id_list("Removed since the previous export", "removed", data.removed,
                       f", not listed (the report keeps only the first {shown})"))


def _table(head: list[str], rows: list[list[Any]], table_id: str) -> str:
    if not rows:
        return '<p class="muted">None.</p>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{v}</td>' if isinstance(v, int) else
                         f"<td>{escape(str(v))}</td>" for v in row) + "</tr>"
        for row in rows)
    return f'<table id="{table_id}"><tr>{th}</tr>{body}</table>'


def _actions(data: ReportData) -> str:
    counts = _table(["kind", "status", "count"], [list(r) for r in data.actions], "actions")
    failures = _table(["kind", "errcode", "errmsg", "count"],
                      [[k, "" if c is None else str(c), m, n] for k, c, m, n in data.failures],
                      "failures")
    return f"<h2>Actions</h2>{counts}<h2>Failed actions by errcode</h2>{failures}"


def _rules(data: ReportData) -> str:
    rows = [list(r) for r in data.rule_hits]
    return "<h2>Hits per rule</h2>" + _table(["rule", "action", "hits"], rows, "rule-hits")


def _chart(data: ReportData, width: int = 720, height: int = 180) -> str:
    """Decisions per hour over the 24 hours before the snapshot: inline SVG bars with a
    count axis, the hours labelled in the export's zone, oldest hour on the left."""
    hours = len(data.hourly)
    peak = max(data.hourly, default=0)
    top = peak or 1
    left, bottom, right, head = 36, 34, 8, 8
    plot_w, plot_h = width - left - right, height - bottom - head
    bar_w = plot_w / max(hours, 1)
    start = data.hourly_start or data.window[1] - hours * 3600
    parts = [f'<line x1="{left}" y1="{head}" x2="{left}" y2="{head + plot_h}"/>',
             f'<line x1="{left}" y1="{head + plot_h}" x2="{width - right}" '
             f'y2="{head + plot_h}"/>']
    for value in sorted({0, top // 2, top} if peak else {0}):
        y = head + plot_h - plot_h * value / top
        parts.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{value}</text>')
    for i, n in enumerate(data.hourly):
        h = plot_h * n / top
        x = left + i * bar_w
        hour = local_time(start + i * 3600, data.timezone, "%H:00")
        parts.append(f'<rect x="{x + 1:.1f}" y="{head + plot_h - h:.1f}" '
                     f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="#4a78c2" '
                     f'data-count="{n}"><title>{hour}: {n}</title></rect>')
        if i % 3 == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{head + plot_h + 13}" '
                         f'text-anchor="middle">{hour}</text>')
    zone = escape(zone_label(start, data.timezone))
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 3}" text-anchor="middle">'
                 f"hour starting ({zone})</text>")
    parts.append(f'<text x="10" y="{head + plot_h / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 10 {head + plot_h / 2:.1f})">decisions</text>')
    first = escape(labelled(start, data.timezone, MINUTES)) if hours else ""
    return (f'<h2>Decisions per hour, last 24 h <span class="muted">({sum(data.hourly)}, '
            f"peak {peak}; from {first}, oldest on the left)</span></h2>"
            f'<svg id="hourly" xmlns="http://www.w3.org/2000/svg" width="100%" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="decisions per hour">'
            + "".join(parts) + "</svg>")


# What to do about a failed action, beyond what the errcode's explanation says.
_NO_RETRY = frozenset({40003, 49003})  # the OpenID itself is refused: retrying fails alike


def _attention(data: ReportData) -> str:
    """The box at the top: what an operator must act on, with the fix."""
    items = []
    if data.paused:
        items.append(f"<li><b>Sending to WeChat is paused</b> until "
                     f"{escape(when_long(data.paused_until, data.timezone))}: "
                     f"{escape(data.paused_reason)} Queued actions wait and are sent "
                     "then.</li>")
    for kind, code, msg, count in data.failures:
        ids = [o for k, o, c, _m in data.failed if k == kind and c == code]
        fix = explain(code) or "See `python -m bot blacklist status`."
        then = "" if code in _NO_RETRY or "retry" in fix else (
            " Once fixed: <code>python -m bot blacklist retry</code>.")
        listed = "".join(f"<li><code>{escape(o)}</code></li>" for o in ids)
        items.append(f"<li><b>{escape(plural(count, kind + ' action'))} failed</b>: WeChat "
                     f"API {escape(describe_error(code, msg))}. {escape(fix)}{then}"
                     + (f'<ul class="ids">{listed}</ul>' if listed else "") + "</li>")
    for f in data.findings:
        if f.count and f.name in ("hand_added", "hand_removed"):
            shown = ", ".join(f"<code>{escape(o)}</code>" for o in f.sample[:5])
            more = f" and {f.count - 5} more" if f.count > 5 else ""
            items.append(f"<li><b>Changed by hand on the platform</b>: {escape(f.title)}: "
                         f"{f.count} ({shown}{more}; see the reconciliation below).</li>")
    if not items:
        return '<p class="calm" id="attention">Nothing needs attention.</p>'
    return ('<div class="attention" id="attention"><h2>Needs attention</h2><ul>'
            + "".join(items) + "</ul></div>")


def _findings(data: ReportData) -> str:
    if not data.findings:
        return ""
    out = ["<h2>Reconciliation with our records</h2>"]
    for f in data.findings:
        out.append(f'<h3>{escape(f.title)} <span class="muted" id="{escape(f.name)}-count">'
                   f"({f.count})</span></h3>")
        if f.sample:
            items = "".join(f"<li><code>{escape(s)}</code></li>" for s in f.sample)
            out.append(f"<ul>{items}</ul>")
            if f.count > len(f.sample):
                out.append(f'<p class="muted">... and {f.count - len(f.sample)} more.</p>')
    return "".join(out)
