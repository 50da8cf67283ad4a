"""The report for an operator: what needs attention first, a chart with axes and
labelled hours, Chinese text that renders, a JSON that says its own order."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bot.jobs.export import build_report
from bot.jobs.report import Finding, ReportData, render_html, summary_json
from bot.storage.sqlite.actions import set_pause
from bot.storage.sqlite.adapters import SqliteStorage
from bot.storage.sqlite.store import Store
from tests.test_report import CHROMIUM, NO_CHROMIUM, TAKEN, TZ, parse, sample_data

ROOT = Path(__file__).resolve().parents[1]


def attention(html: str) -> str:
    return parse(html).by_id["attention"]


def test_the_box_at_the_top_lists_pause_failures_and_hand_changes() -> None:
    data = sample_data()
    data.paused_until, data.paused_reason = TAKEN + 3600, "WeChat API errcode 45009 (quota)."
    data.failed = [("blacklist", "oFailed0000000000000000000001", 48001, "unauthorized"),
                   ("blacklist", "oFailed0000000000000000000002", 48001, "unauthorized")]
    html = render_html(data)
    assert html.index('id="attention"') < html.index('id="total"'), "at the top"
    box = attention(html)
    assert "Sending to WeChat is paused until 2024-05-02 04:00 +08:00 (Asia/Shanghai)" in box
    assert "2 blacklist actions failed: WeChat API errcode 48001" in box
    assert "only verified (认证) Official Accounts may blacklist" in box, "the fix"
    assert box.count("blacklist retry") == 1, "the explanation's own fix, not twice"
    assert "oFailed0000000000000000000001" in box and "oFailed0000000000000000000002" in box
    assert "Changed by hand on the platform: Added by hand: 1 (oHand<&>" in box
    assert "Removed by hand" not in box, "a check that found nothing is not news"


def test_a_bad_openid_is_not_sent_to_retry_and_a_quiet_day_says_so() -> None:
    data = sample_data()
    data.failures = [("blacklist", 40003, "invalid openid", 1)]
    data.failed = [("blacklist", "oTypo", 40003, "invalid openid")]
    box = attention(render_html(data))
    assert "1 blacklist action failed" in box and "oTypo" in box
    assert "blacklist retry" not in box
    data.failures = [("unblacklist", 40164, "ip not allowed", 1)]
    assert "Once fixed: python -m bot blacklist retry" in attention(render_html(data))
    quiet = ReportData(day="2024-05-02", timezone=TZ, taken_at=TAKEN, total=0)
    assert attention(render_html(quiet)) == "Nothing needs attention."


def test_the_chart_has_axes_and_hours_labelled_in_the_zone() -> None:
    data = sample_data()
    data.hourly_start = TAKEN - 86400  # 2024-05-01 03:00 in Shanghai
    html = render_html(data)
    chart = html.split('<svg id="hourly"')[1].split("</svg>")[0]
    assert chart.count("<line ") == 2, "a count axis and an hour axis"
    labels = parse(html).by_id["hourly"]
    for tick in ("03:00", "06:00", "09:00", "12:00", "00:00"):
        assert tick in labels, tick
    assert "hour starting (Asia/Shanghai, UTC+08:00)" in labels and "decisions" in labels
    assert ">0</text>" in chart and ">7</text>" in chart, "the count axis: 0 to the peak"
    assert "from 2024-05-01 03:00 +08:00, oldest on the left" in html
    assert parse(html).bars == data.hourly


def test_the_json_says_which_hour_comes_first_and_holds_the_pause() -> None:
    data = sample_data()
    data.hourly_start = TAKEN - 86400
    data.paused_until, data.paused_reason = TAKEN + 600, "quota"
    summary = json.loads(json.dumps(summary_json(data)))
    assert summary["decisions_per_hour_start"] == TAKEN - 86400
    assert summary["decisions_per_hour_first"] == "2024-05-01 03:00 +08:00"
    assert summary["decisions_per_hour_order"].startswith("oldest first")
    assert summary["sending"] == {"paused": True, "paused_until": TAKEN + 600,
                                  "resume_at": "2024-05-02 03:10 +08:00 (Asia/Shanghai)",
                                  "reason": "quota"}
    calm = summary_json(ReportData(day="2024-05-02", timezone=TZ, taken_at=TAKEN, total=0))
    assert calm["sending"]["paused"] is False


async def test_built_from_the_database_with_the_pause_and_who_failed(tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.db")
    await store.start()
    try:
        def seed(db: object) -> None:
            ex = db.execute  # type: ignore[attr-defined]
            ex("INSERT INTO snapshots (day, taken_at, total, complete) VALUES"
               " ('2024-05-02', ?, 0, 1)", [TAKEN + 1234])  # not on the hour
            ex("INSERT INTO actions (openid, kind, status, created_at, updated_at, errcode,"
               " errmsg) VALUES ('oBad', 'blacklist', 'failed', ?, ?, 40003, 'invalid')",
               [TAKEN - 100, TAKEN - 100])
            ex("INSERT INTO decisions (openid, rule_id, action, created_at) VALUES"
               " ('oX', 'spam', 'log', ?)", [TAKEN + 1000])  # 03:16: the hour in progress
            set_pause(db, TAKEN + 7200, "WeChat API errcode 45009 (quota)", TAKEN)  # type: ignore[arg-type]

        await store.call(seed)
        storage = SqliteStorage(store)
        data = await build_report(storage.snapshots, "2024-05-02", TZ, queue=storage.actions,
                                  now=TAKEN + 1300)
    finally:
        await store.close()
    assert data.hourly_start == TAKEN - 86400, "whole clock hours, the last one 02:00-03:00"
    assert sum(data.hourly) == 0, "03:16 is in the hour still in progress"
    assert data.failed == [("blacklist", "oBad", 40003, "invalid")]
    assert data.paused_until == TAKEN + 7200 and "45009" in data.paused_reason
    assert "Sending to WeChat is paused until 2024-05-02 05:00 +08:00" in attention(
        render_html(data))


def test_the_image_carries_chinese_fonts() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "fonts-noto-cjk" in dockerfile
    assert '"Noto Sans CJK SC"' in render_html(sample_data())


def test_chinese_text_renders_as_glyphs_not_boxes(tmp_path: Path) -> None:
    """Two different Chinese texts give two different pictures only when a CJK font is
    installed: without one both are rows of identical 'missing glyph' boxes. Never
    skipped: a machine without chromium fails here, saying what to install."""
    assert CHROMIUM is not None, NO_CHROMIUM
    shots = []
    for text in ("兼职刷单", "加微信群"):
        data = sample_data()
        data.findings = [Finding("hand_added", text, 0, [])]
        data.notes, data.removed, data.added = [], (0, []), (0, [])
        page = tmp_path / f"{len(shots)}.html"
        page.write_text(render_html(data).replace(
            "<body>", f'<body><p style="font-size:64px" id="probe">{text}</p>'),
            encoding="utf-8")
        shot = tmp_path / f"{len(shots)}.png"
        result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                 "--no-first-run", "--disable-background-networking",
                                 f"--user-data-dir={tmp_path / 'profile'}",
                                 "--window-size=800,300", f"--screenshot={shot}",
                                 page.as_uri()], check=False, capture_output=True,
                                 timeout=60)
        assert result.returncode == 0 and shot.exists(), result.stderr.decode()[-2000:]
        shots.append(shot.read_bytes())
    assert shots[0] != shots[1], "both texts drew the same boxes: no CJK font"
