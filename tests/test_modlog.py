"""The mod log: one INFO line per decision that acts, the `decisions` command, and a
reply that fits the action taken (issue 11 items 1 and 9)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.app import build_app
from bot.cli import main
from bot.config import build_config
from bot.core.errors import RuleError
from bot.core.models import ActionKind, Event
from bot.rules import RuleEngine, load_ruleset
from tests.pushes import TOKEN, signed_query, text_xml

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
OPENID = "oModLogFollower0000000000001"
LONG = "这是广告：兼职刷单日结三百元起步欢迎咨询，名额有限先到先得"
LADDER = """
rules:
  - id: ads
    keywords: [广告]
    action: warn
    warn_limit: 1
    warn_window: 1h
    duration: 1d
    reply: 请勿发广告，多次发布将被拉黑
    reply_blacklisted: 您已被拉黑一天
"""


def engine_for(tmp_path: Path, text: str) -> RuleEngine:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(text, encoding="utf-8")
    return RuleEngine(load_ruleset(rules))


def event(content: str, t: int) -> Event:
    return Event(openid=OPENID, account="gh", create_time=t, msg_type="text",
                 msg_id=str(t), texts=MappingProxyType({"content": content}))


def test_an_escalated_warning_answers_with_reply_blacklisted(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, LADDER)
    first = engine.evaluate(event("这是广告", 100))
    assert first.hits[0].action is ActionKind.WARN and first.reply == "请勿发广告，多次发布将被拉黑"
    second = engine.evaluate(event("又是广告", 110))
    assert second.actions[0].kind is ActionKind.BLACKLIST
    assert second.reply == "您已被拉黑一天"


def test_an_escalated_warning_without_reply_blacklisted_sends_no_warning(
        tmp_path: Path) -> None:
    engine = engine_for(tmp_path, LADDER.replace("    reply_blacklisted: 您已被拉黑一天\n", ""))
    engine.evaluate(event("广告", 100))
    escalated = engine.evaluate(event("广告", 110))
    assert escalated.actions[0].kind is ActionKind.BLACKLIST and escalated.reply is None


def test_a_warning_beside_a_blacklist_does_not_speak(tmp_path: Path) -> None:
    both = LADDER + """
  - id: ad-blacklist
    keywords: [加微信]
    action: blacklist
"""
    engine = engine_for(tmp_path, both)
    decision = engine.evaluate(event("广告 加微信", 100))
    assert {h.action for h in decision.hits} == {ActionKind.WARN, ActionKind.BLACKLIST}
    assert decision.reply is None  # "do it again and ..." would not fit a blacklist
    with_reply = both + "    reply: 已拉黑\n"
    engine = engine_for(tmp_path, with_reply)
    assert engine.evaluate(event("广告 加微信", 100)).reply == "已拉黑"


def test_reply_blacklisted_needs_a_warn_ladder(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "rules:\n  - id: a\n    keywords: [x]\n    action: blacklist\n"
        "    reply_blacklisted: bye\n", encoding="utf-8")
    with pytest.raises(RuleError) as caught:
        load_ruleset(rules)
    assert "r.yaml:5: rule 'a': 'reply_blacklisted' only applies to a warn rule with " \
           "'warn_limit'" in caught.value.errors[0]


def write_config(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(LADDER, encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"wechat:\n  token: {TOKEN}\n  secret: s3cr3t-never-logged\n"
        f"storage:\n  path: {tmp_path / 'bot.db'}\n"
        f"rules:\n  dir: {rules}\nactions:\n  dry_run: true\n"
        f"export:\n  dir: {tmp_path / 'exports'}\n", encoding="utf-8")
    return config


async def test_pushes_log_what_acts_and_decisions_lists_it(
        tmp_path: Path, aiohttp_client: MakeClient, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_config(tmp_path)
    from bot.config import load_config

    client = await aiohttp_client(build_app(load_config(str(config_path))))
    now = int(time.time())
    answers = []
    with caplog.at_level(logging.INFO, logger="bot.web.webhook"):
        for n, text in enumerate(["你好", LONG, "又是广告"]):
            response = await client.post("/wechat", params=signed_query(),
                                         data=text_xml(OPENID, text, 500 + n, now + n))
            assert response.status == 200
            answers.append(await response.text())
    assert answers[0] == "success"
    assert "多次发布将被拉黑" in answers[1]
    assert "您已被拉黑一天" in answers[2] and "多次发布" not in answers[2]
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.web.webhook"]
    assert lines == [
        f"warned oModLogF… by ads: {LONG[:24]}…",  # the OpenID and the words cut
        "blacklisted oModLogF… by ads (1d): 又是广告 (dry-run: not sent)",
    ]
    assert not any("s3cr3t" in line or TOKEN in line for line in lines)
    await client.close()

    assert main(["decisions", "--since", "1h", "--config", str(config_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "2 shown, newest first" in out[0]
    assert "blacklist" in out[1] and "又是广告" in out[1] and OPENID in out[1]
    assert "warn" in out[2] and LONG[:40] in out[2]
    assert "warning 1 of 1" in out[2]
    assert main(["decisions", "--action", "blacklist", "--config", str(config_path)]) == 0
    only = capsys.readouterr().out.splitlines()
    assert len(only) == 2 and "又是广告" in only[1]
    assert main(["decisions", "--rule", "nope", "--config", str(config_path)]) == 1
    assert "0 shown" in capsys.readouterr().out
    assert main(["decisions", "--since", "soon", "--config", str(config_path)]) == 1
    assert "expected a duration" in capsys.readouterr().err


def test_decisions_without_a_database_says_so(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'none.db'}\n", encoding="utf-8")
    assert main(["decisions", "--config", str(config)]) == 1
    assert "no database at" in capsys.readouterr().err
    assert build_config({}).export.timezone  # the zone the times are printed in
