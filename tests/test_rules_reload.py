"""Hot reload, the rules CLI, replay over a stored history, and the pure core's imports."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType

import pytest

from bot.cli import main
from bot.core.models import Action, ActionKind, Decision, Event, RuleHit
from bot.jobs.reload import RuleWatcher
from bot.rules import RuleEngine, RuleSet, load_ruleset
from bot.storage.sqlite.admin import queue_admin_actions
from bot.storage.sqlite.store import insert_decision, insert_event, open_db

ROOT = Path(__file__).resolve().parents[1]
SPAM = "rules:\n  - id: spam\n    keywords: [加微信]\n    action: blacklist\n"
ADS = "rules:\n  - id: ads\n    keywords: [广告]\n    action: blacklist\n"


def text_event(content: str, openid: str = "oFollower000000000000000001", t: int = 1000
               ) -> Event:
    return Event(openid=openid, account="gh", create_time=t, msg_type="text",
                 msg_id=f"{openid}-{t}", texts=MappingProxyType({"content": content}))


def fired(engine: RuleEngine, content: str) -> list[str]:
    return [hit.rule_id for hit in engine.evaluate(text_event(content)).hits]


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "spam.yaml").write_text(SPAM, encoding="utf-8")
    return directory


def watcher_for(directory: Path, seen: list[RuleSet] | None = None
                ) -> tuple[RuleEngine, RuleWatcher]:
    engine = RuleEngine(load_ruleset(directory))
    watcher = RuleWatcher(directory, engine, interval=0.1,
                          on_change=seen.append if seen is not None else None)
    return engine, watcher


async def test_unchanged_directory_is_not_reloaded(rules_dir: Path) -> None:
    _, watcher = watcher_for(rules_dir)
    assert await watcher.check_once() is False


async def test_changed_file_takes_effect(rules_dir: Path) -> None:
    seen: list[RuleSet] = []
    engine, watcher = watcher_for(rules_dir, seen)
    (rules_dir / "spam.yaml").write_text(SPAM.replace("加微信", "刷单返利"), encoding="utf-8")
    assert await watcher.check_once() is True
    assert fired(engine, "刷单返利") == ["spam"] and fired(engine, "加微信") == []
    assert len(seen) == 1 and watcher.last_error is None


async def test_new_and_deleted_files(rules_dir: Path) -> None:
    engine, watcher = watcher_for(rules_dir)
    (rules_dir / "ads.yml").write_text(ADS, encoding="utf-8")
    assert await watcher.check_once() is True
    assert fired(engine, "广告 加微信") == ["ads", "spam"]
    (rules_dir / "spam.yaml").unlink()
    assert await watcher.check_once() is True
    assert fired(engine, "广告 加微信") == ["ads"]
    assert len(engine.ruleset) == 1


async def test_broken_file_keeps_the_last_good_rules(rules_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    engine, watcher = watcher_for(rules_dir)
    (rules_dir / "ads.yaml").write_text(ADS, encoding="utf-8")
    (rules_dir / "spam.yaml").write_text(SPAM + "    colour: red\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert await watcher.check_once() is True
    assert fired(engine, "广告 加微信") == ["spam"]  # old set whole: no half-applied change
    assert watcher.last_error is not None
    assert f"{rules_dir / 'spam.yaml'}:5: rule 'spam': unknown key 'colour'" in watcher.last_error
    assert "spam.yaml:5" in caplog.text
    assert await watcher.check_once() is False  # no retry loop on the same broken state
    (rules_dir / "spam.yaml").write_text(SPAM, encoding="utf-8")
    assert await watcher.check_once() is True
    assert watcher.last_error is None and fired(engine, "广告 加微信") == ["ads", "spam"]


async def test_reload_keeps_flood_state(rules_dir: Path) -> None:
    flood = "rules:\n  - id: flood\n    flood: {messages: 3, seconds: 60}\n    action: log\n"
    (rules_dir / "flood.yaml").write_text(flood, encoding="utf-8")
    engine, watcher = watcher_for(rules_dir)
    engine.evaluate(text_event("a", t=1))
    engine.evaluate(text_event("b", t=2))
    (rules_dir / "ads.yaml").write_text(ADS, encoding="utf-8")
    assert await watcher.check_once() is True
    assert [h.rule_id for h in engine.evaluate(text_event("c", t=3)).hits] == ["flood"]


# ------------------------------------------------------------------ CLI


def write_config(tmp_path: Path, rules_dir: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'bot.db'}\nrules:\n  dir: {rules_dir}\n",
                      encoding="utf-8")
    return config


def test_rules_check_exit_codes(tmp_path: Path, rules_dir: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, rules_dir))
    assert main(["rules", "check", "--config", config]) == 0
    assert "1 file, 1 rule in force, 1 keyword" in capsys.readouterr().out
    (rules_dir / "bad.yaml").write_text("rules:\n  - id: x\n    action: log\n", encoding="utf-8")
    assert main(["rules", "check", "--config", config]) == 1
    out = capsys.readouterr().out
    assert f"{rules_dir / 'bad.yaml'}:2: rule 'x': a rule needs at least one condition" in out
    assert main(["rules", "check", "--config", config, "--dir", str(ROOT / "rules")]) == 0


def test_rules_check_as_a_process(tmp_path: Path, rules_dir: Path) -> None:
    (rules_dir / "bad.yaml").write_text("rules: [\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "rules", "check", "--config",
         str(write_config(tmp_path, rules_dir))], cwd=ROOT, capture_output=True, text=True,
        check=False)
    assert result.returncode == 1
    assert f"{rules_dir / 'bad.yaml'}:2: invalid YAML" in result.stdout


def test_rules_test_text_shows_why(tmp_path: Path, rules_dir: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, rules_dir))
    assert main(["rules", "test", "--config", config, "--text", "加 微 信 吧"]) == 0
    out = capsys.readouterr().out
    assert "fires: spam -> blacklist: keyword '加微信' in content at 0-5" in out
    assert main(["rules", "test", "--config", config, "--text", "你好"]) == 0
    assert "no rule fires" in capsys.readouterr().out


def test_replay_compares_with_what_was_actioned(tmp_path: Path, rules_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, rules_dir)
    db = open_db(tmp_path / "bot.db")
    now = 2_000_000_000  # received_at far in the future: inside any --since window
    old_hit = RuleHit("old-rule", ActionKind.BLACKLIST, "keyword '广告'")
    with db.atomic():
        insert_event(db, text_event("加微信", "oNewSpammer0000000000000001", 1), Decision(), now)
        insert_event(db, text_event("广告", "oOldSpammer0000000000000001", 2), Decision(
            hits=(old_hit,), actions=(Action(ActionKind.BLACKLIST, "oOldSpammer0000000000000001",
                                             "old-rule"),)), now)
        insert_event(db, text_event("加微信", "oBothSpammer000000000000001", 3), Decision(
            hits=(old_hit,)), now)
        insert_event(db, text_event("你好", "oInnocent00000000000000001", 4), Decision(), now)
        insert_decision(db, "oAdminListed00000000000001", Decision(hits=(RuleHit(
            "cli", ActionKind.BLACKLIST, "admin"),)), now, source="cli")
    db.close()
    (rules_dir / "ads.yaml").write_text(ADS.replace("广告", "不存在的词"), encoding="utf-8")
    assert main(["rules", "test", "--replay", "--since", "7d", "--config", str(config),
                 "--rules", str(rules_dir)]) == 0
    out = capsys.readouterr().out
    assert "replayed 4 events" in out
    assert "these rules would blacklist 2 followers; the rules in force blacklisted 2; " \
        "both 1" in out, "compared with what the rules did, not with the admin's blacklist"
    assert "  + oNewSpammer0000000000000001  (spam)" in out
    assert "  - oOldSpammer0000000000000001" in out and "  - oAdminListed" not in out
    assert "blacklisted by hand meanwhile (CLI or console; not compared): 1\n" \
        "  * oAdminListed00000000000001\n" in out
    assert "spam: 2" in out


def test_replay_lists_hand_blacklists_apart(tmp_path: Path, rules_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, rules_dir)
    now = int(time.time())
    spammer, staff_pick = "oSpamAlsoByHand0000000000001", "oOnlyByHand00000000000000001"
    db = open_db(tmp_path / "bot.db")
    with db.atomic():
        insert_event(db, text_event("加微信", spammer, now), Decision(), now)
    db.close()
    queue_admin_actions(tmp_path / "bot.db", [Action(ActionKind.BLACKLIST, o, "cli", "x")
                                              for o in (spammer, staff_pick)],
                        now, dry_run=False)
    assert main(["rules", "test", "--replay", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "the rules in force blacklisted 0; both 0" in out
    assert "newly blacklisted by these rules: 0" in out
    assert f"  * {staff_pick}\n  * {spammer}  (these rules too: spam)\n" in out


def test_replay_flood_state_follows_event_order(tmp_path: Path, rules_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (rules_dir / "spam.yaml").write_text(
        "rules:\n  - id: flood\n    flood: {messages: 3, seconds: 60}\n    action: blacklist\n",
        encoding="utf-8")
    config = write_config(tmp_path, rules_dir)
    db = open_db(tmp_path / "bot.db")
    with db.atomic():
        for t in (0, 30, 59, 200):
            insert_event(db, text_event("hi", "oFlooder000000000000000001", t), Decision(),
                         2_000_000_000)
        for t in (0, 100, 200):
            insert_event(db, text_event("hi", "oSlow00000000000000000001", t), Decision(),
                         2_000_000_000)
    db.close()
    assert main(["rules", "test", "--replay", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "+ oFlooder000000000000000001  (flood)" in out and "oSlow" not in out
    assert "flood: 1" in out


def test_replay_without_a_database_is_an_error(tmp_path: Path, rules_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, rules_dir))
    assert main(["rules", "test", "--replay", "--config", config]) == 1
    assert "no database" in capsys.readouterr().err


def test_pure_core_imports_no_io_frameworks() -> None:
    code = ("import sys; import bot.core.models, bot.core.errors, bot.core.normalize, "
            "bot.core.windows, bot.rules; "
            "bad = [m for m in ('aiohttp', 'sqlite_utils', 'apscheduler') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
