"""The report: rendered HTML parsed back for its numbers, escaping, JSON and chat summary."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

from bot.jobs.export import build_report, write_report
from bot.jobs.report import Finding, ReportData, render_html, summary_json, summary_text
from bot.storage.sqlite.adapters import SqliteStorage
from bot.storage.sqlite.store import Store

TZ = "Asia/Shanghai"
TAKEN = int(datetime(2024, 5, 2, 3, 0, tzinfo=ZoneInfo(TZ)).timestamp())


class Page(HTMLParser):
    """Collects element text by id, every tag, and the chart's bars."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.bars: list[int] = []
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "rect":
            self.bars.append(int(a["data-count"] or 0))
        self._open.append(a.get("id"))
        if a.get("id"):
            self.by_id[a["id"] or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.by_id[ident] += data


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def sample_data() -> ReportData:
    hourly = [0] * 24
    hourly[5], hourly[23] = 7, 3
    return ReportData(
        day="2024-05-02", timezone=TZ, taken_at=TAKEN, total=1970, previous_day="2024-05-01",
        previous_total=2000, added=(60, [f"oAdded{i:022d}" for i in range(50)]),
        removed=(100, ["o<script>alert(1)</script>"] + [f"oGone{i:023d}" for i in range(49)]),
        window=(TAKEN - 86400, TAKEN),
        actions=[("blacklist", "done", 12), ("blacklist", "failed", 2)],
        failures=[("blacklist", 48001, 'api unauthorized <img src="x">', 2)],
        rule_hits=[("spam-words", "blacklist", 9), ("<b>bold</b>", "warn", 1)],
        hourly=hourly,
        findings=[Finding("hand_added", "Added by hand", 1, ["oHand<&>"]),
                  Finding("hand_removed", "Removed by hand", 0, [])],
        notes=["note with <tags>"],
    )


def test_numbers_readable_from_the_page() -> None:
    page = parse(render_html(sample_data()))
    assert page.by_id["total"] == "1970"
    assert page.by_id["change"] == "-30"
    assert page.by_id["added"] == "60" and page.by_id["removed"] == "100"
    assert page.by_id["added-count"] == "(60)"
    assert page.by_id["hand_added-count"] == "(1)"
    assert page.bars == sample_data().hourly
    table = page.by_id["failures"]
    assert "48001" in table and "api unauthorized" in table
    assert "spam-words" in page.by_id["rule-hits"] and "9" in page.by_id["rule-hits"]


def test_long_lists_truncated_with_counts() -> None:
    html = render_html(sample_data())
    assert "... and 10 more" in html  # 60 added, 50 listed
    assert "... and 50 more" in html  # 100 removed, 50 listed
    added_tail = html.split('id="added-list"')[1].split("</p>")[0]
    assert "blacklist-2024-05-02.csv" in added_tail
    removed_tail = html.split('id="removed-list"')[1].split("</p>")[0]
    assert "not listed" in removed_tail and "CSV" not in removed_tail.upper(), \
        "the CSV holds today's OpenIDs, never the removed ones"
    assert html.count("oAdded") == 50


def test_everything_untrusted_is_escaped() -> None:
    html = render_html(sample_data())
    page = parse(html)
    assert {t for t, _ in page.tags} <= {"html", "head", "meta", "title", "style", "body",
                                         "h1", "h2", "h3", "p", "div", "span", "ul", "li",
                                         "code", "table", "tr", "th", "td", "svg", "rect",
                                         "text", "line", "b"}
    assert "<script>" not in html and "<img" not in html and "<b>bold" not in html
    assert "o&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "oHand&lt;&amp;&gt;" in html
    assert "note with &lt;tags&gt;" in html


def test_self_contained() -> None:
    html = render_html(sample_data())
    page = parse(html)
    assert not [a for _, a in page.tags if "src" in a or "href" in a]
    assert "url(" not in html and "@import" not in html and "<link" not in html
    # The only URL is the SVG namespace, which is an identifier, never fetched.
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"]


def test_first_export_has_no_diff() -> None:
    data = ReportData(day="2024-05-01", timezone=TZ, taken_at=TAKEN, total=5)
    page = parse(render_html(data))
    assert page.by_id["change"] == "n/a" and page.by_id["added"] == "n/a"
    assert summary_json(data)["previous"] is None and summary_json(data)["change"] is None
    assert summary_text(data).splitlines()[0] == "Blacklist export 2024-05-01: 5 OpenIDs"


def test_json_and_text_summaries() -> None:
    data = sample_data()
    summary = json.loads(json.dumps(summary_json(data)))
    assert summary["total"] == 1970 and summary["change"] == -30
    assert summary["previous"] == {"day": "2024-05-01", "total": 2000, "taken_at": None,
                                   "same_day": False}
    assert summary["added"]["count"] == 60 and len(summary["added"]["sample"]) == 50
    assert summary["failures"] == [{"kind": "blacklist", "errcode": 48001,
                                    "errmsg": 'api unauthorized <img src="x">', "count": 2}]
    assert summary["decisions_per_hour"][5] == 7
    text = summary_text(data)
    assert "1970 OpenIDs (-30 since the 2024-05-01 export)" in text
    assert "added 60, removed 100" in text
    assert "actions done 12, failed 2" in text
    assert "Added by hand: 1" in text and "Removed by hand" not in text


async def test_report_built_from_the_database(tmp_path: Path) -> None:
    """Decisions and actions in the window are counted; the chart buckets by hour."""
    store = Store(tmp_path / "bot.db")
    await store.start()
    try:
        def seed(db: object) -> None:
            ex = db.execute  # type: ignore[attr-defined]
            ex("INSERT INTO snapshots (day, taken_at, total, complete) VALUES"
               " ('2024-05-02', ?, 0, 1)", [TAKEN])
            for minutes_ago, rule in [(10, "spam"), (20, "spam"), (130, "flood"),
                                      (60 * 30, "old")]:
                ex("INSERT INTO decisions (openid, rule_id, action, created_at)"
                   " VALUES ('oX', ?, 'blacklist', ?)", [rule, TAKEN - minutes_ago * 60])
            for status, code in [("done", None), ("done", None), ("failed", 40003),
                                 ("pending", None)]:
                ex("INSERT INTO actions (openid, kind, status, created_at, updated_at,"
                   " errcode, errmsg) VALUES ('oX', 'blacklist', ?, ?, ?, ?, 'bad')",
                   [status, TAKEN - 100, TAKEN - 100, code])

        await store.call(seed)
        data = await build_report(SqliteStorage(store).snapshots, "2024-05-02", TZ)
        paths = await write_report(tmp_path / "exports", data)
    finally:
        await store.close()
    assert data.rule_hits == [("spam", "blacklist", 2), ("flood", "blacklist", 1)]
    assert data.hourly[23] == 2 and data.hourly[21] == 1 and sum(data.hourly) == 3
    assert data.actions == [("blacklist", "done", 2), ("blacklist", "failed", 1)]
    assert data.failures == [("blacklist", 40003, "bad", 1)]
    page = parse(paths["html"].read_text())
    assert page.bars[23] == 2 and page.by_id["total"] == "0"
    assert json.loads(paths["json"].read_text())["rule_hits"][0]["count"] == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = ("the browser tests need Debian's chromium and fonts-noto-cjk: .ci/run installs "
               "them (apt-get install chromium fonts-noto-cjk)")


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Never skipped: a machine without chromium fails here, saying what to install."""
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(sample_data()), encoding="utf-8")
    assert CHROMIUM is not None, NO_CHROMIUM
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page_file.as_uri()],
        capture_output=True, text=True, timeout=40, check=True,
    )
    page = parse(result.stdout)  # the DOM as the browser built it, scripts none
    assert page.by_id["total"] == "1970" and page.by_id["change"] == "-30"
    assert page.bars == sample_data().hourly
    assert "<script>alert(1)</script>" not in result.stdout
