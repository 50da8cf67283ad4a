"""The command line: every command documented, config errors exit 2 naming the key."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import COMMAND_MODULES, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                for inner, leaf in subcommands(sub).items():
                    found[f"{name} {inner}"] = leaf
    return found


def test_every_command_module_is_present_and_registered() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name)
    commands = subcommands(build_parser())
    for expected in ("serve", "rules", "rules check", "rules test", "why", "blacklist",
                     "blacklist add", "blacklist remove", "blacklist status", "blacklist retry",
                     "export", "report"):
        assert expected in commands, expected


def test_every_command_has_help_text() -> None:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
            assert all(helps.values()), helps
    for name, sub in subcommands(parser).items():
        assert sub.format_help().strip(), name
        has_children = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
        if not has_children:
            options = {o for a in sub._actions for o in a.option_strings}
            assert "--config" in options, f"{name} lacks --config"


def test_module_help_lists_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "bot", "--help"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    for command in ("serve", "rules", "why", "blacklist", "export", "report"):
        assert command in result.stdout


def test_config_error_exits_2_naming_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("actions:\n  batch_size: 50\n", encoding="utf-8")
    assert main(["why", "oSomeone000001", "--config", str(bad)]) == 2
    assert "actions.batch_size" in capsys.readouterr().err


def test_why_explains_a_follower(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.core.models import Action, ActionKind, Decision, Event, RuleHit
    from bot.storage.sqlite.store import insert_event, run_sync

    db_path = tmp_path / "bot.db"
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  path: {db_path}\n", encoding="utf-8")
    openid = "oWhyFollower000000000000001"
    event = Event(openid=openid, account="gh", create_time=1_700_000_000, msg_type="text",
                  msg_id="1", texts={"content": "加微信"})
    decision = Decision(hits=(RuleHit("contact-spam", ActionKind.BLACKLIST,
                                      "keyword '加微信' in content[0:3]"),),
                        actions=(Action(ActionKind.BLACKLIST, openid, "contact-spam"),))
    run_sync(db_path, lambda db: insert_event(db, event, decision, now=1_700_000_000))
    assert main(["why", openid, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "contact-spam" in out and "keyword '加微信'" in out and "pending" in out
    assert main(["why", "oNobody00000000000000000001", "--config", str(config)]) == 1


def test_rules_test_text_shows_expiry_in_the_export_timezone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re
    import time
    from datetime import datetime
    from zoneinfo import ZoneInfo

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - id: timed\n    keywords: [spamword]\n"
                                  "    action: blacklist\n    duration: 7d\n", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(f"rules:\n  dir: {rules}\nexport:\n  timezone: America/New_York\n",
                      encoding="utf-8")
    assert main(["rules", "test", "--text", "spamword", "--config", str(config)]) == 0
    found = re.search(r"expires at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ([+-]\d\d:\d\d)\)",
                      capsys.readouterr().out)
    assert found, "the expiry is a local time labelled with its offset, not a raw unix time"
    shown = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=ZoneInfo("America/New_York"))
    assert abs(shown.timestamp() - (time.time() + 7 * 86400)) < 60
    offset = shown.utcoffset()
    assert offset is not None
    hours = int(offset.total_seconds()) // 3600
    assert found[2] == f"-{-hours:02d}:00", "the label is New York's offset at that date"


@pytest.mark.parametrize("command", [
    ["why", "oWhyFollower000000000000001"], ["blacklist", "status"], ["blacklist", "send"],
    ["blacklist", "retry"], ["rules", "test", "--replay"]],
    ids=["why", "status", "send", "retry", "replay"])
def test_reading_commands_refuse_a_missing_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    missing = tmp_path / "typo" / "bot.db"
    config = tmp_path / "c.yaml"
    config.write_text(f"wechat:\n  appid: wx0000000000000000\n  secret: s3cret\n"
                      f"storage:\n  path: {missing}\n", encoding="utf-8")
    assert main([*command, "--config", str(config)]) == 1
    assert f"no database at {missing} (storage.path)" in capsys.readouterr().err
    assert not missing.parent.exists(), "a mistyped path must not leave a database behind"
