"""Durations are capped (rule files, --for, --since) and any stored time prints safely."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.timefmt import when
from bot.rules.schema import MAX_DURATION_DAYS, parse_duration
from bot.storage.sqlite.store import open_db, run_sync
from tests.fake_wechat import make_openids

HUGE = "99999999999999999999d"


def write_config(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'bot.db'}\nrules:\n  dir: {rules}\n",
                      encoding="utf-8")
    return config


@pytest.mark.parametrize("text, seconds", [
    ("3650d", 3650 * 86400), ("87600h", 3650 * 86400), ("3651d", None), ("87601h", None),
    ("99999999d", None), (HUGE, None), ("9" * 5000 + "d", None),
], ids=["cap", "cap-in-hours", "a-day-over", "an-hour-over", "years", "overflow",
        "too-many-digits"])
def test_parse_duration_is_capped(text: str, seconds: int | None) -> None:
    assert MAX_DURATION_DAYS == 3650
    assert parse_duration(text) == seconds


def test_rule_duration_over_the_cap_is_rejected_at_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    rule_file = tmp_path / "rules" / "r.yaml"
    rule_file.write_text("rules:\n  - id: timed\n    keywords: [spamword]\n"
                         f"    action: blacklist\n    duration: {HUGE}\n", encoding="utf-8")
    assert main(["rules", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{rule_file}:5: rule 'timed': 'duration' must be a duration like" in out
    assert "at most 3650d" in out


@pytest.mark.parametrize("value", ["99999999d", HUGE])
def test_blacklist_for_over_the_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    value: str) -> None:
    config = write_config(tmp_path)
    code = main(["blacklist", "add", make_openids(1)[0], "--for", value, "--queue-only",
                 "--config", str(config)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"--for '{value}'" in err and "at most 3650d" in err
    db = open_db(tmp_path / "bot.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM actions").fetchone() == (0,), "nothing queued"
    finally:
        db.close()


def test_replay_since_over_the_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    open_db(tmp_path / "bot.db").close()
    assert main(["rules", "test", "--replay", "--since", HUGE, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "--since" in err and "at most 3650d" in err


def test_when_prints_times_beyond_any_date() -> None:
    assert when(1_700_000_000, "Asia/Shanghai") == "2023-11-15 06:13:20 +08:00"
    assert when(10 ** 13, "Asia/Shanghai") == "unix time 10000000000000 (out of range)"
    assert when(10 ** 30, "Asia/Shanghai").endswith("(out of range)")


def test_why_shows_a_stored_end_beyond_any_date(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    openid = make_openids(1)[0]
    now = int(time.time())
    end = now + 99999999 * 86400  # what an uncapped `--for 99999999d` stored
    run_sync(tmp_path / "bot.db", lambda db: db.execute(
        "INSERT INTO blacklist (openid, status, rule_id, reason, since, expires_at, updated_at)"
        " VALUES (?, 'blacklisted', 'cli', 'spam', ?, ?, ?)", [openid, now, end, now]))
    main(["why", openid, "--config", str(config)])
    assert f"expires unix time {end} (out of range)" in capsys.readouterr().out
