"""Near misses: which conditions of each rule held, which did not; real warning history."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType

import pytest

from bot.cli import main
from bot.core.models import Event
from bot.rules import RuleEngine, load_ruleset
from bot.rules.explain import explain_event
from bot.storage.sqlite.store import Store

USER = "oExplainFollower000000000001"
RULES = """\
rules:
  - id: job-scam
    keywords: [刷单]
    contact: [wechat_id, qq, phone]
    action: blacklist
  - id: ads
    keywords: [优惠]
    action: warn
    warn_limit: 2
  - id: flood
    msg_types: [text]
    flood: {messages: 3, seconds: 60}
    action: log
  - id: links-only
    msg_types: [link]
    keywords: [刷单]
    action: log
"""


def event(text: str, t: int = 1_700_000_000, openid: str = USER) -> Event:
    return Event(openid=openid, account="", create_time=t, msg_type="text",
                 texts=MappingProxyType({"content": text}))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / "r.yaml").write_text(RULES, encoding="utf-8")
    return directory


def test_a_keyword_hit_without_contact_is_a_near_miss(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    explanation = explain_event(ruleset, event("刷单兼职日结"))
    assert explanation.decision.empty and explanation.score is None
    (miss,) = [c for c in explanation.near_misses if c.rule_id == "job-scam"]
    assert [(c.name, c.held) for c in miss.conditions] == [("keywords", True),
                                                           ("contact", False)]
    assert "刷单" in miss.conditions[0].detail and "QQ" in miss.conditions[1].detail
    assert miss.where.endswith("r.yaml:2")
    # a rule for another message type is a near miss too, saying why
    (links,) = [c for c in explanation.near_misses if c.rule_id == "links-only"]
    assert [(c.name, c.held) for c in links.conditions] == [("msg_types", False),
                                                            ("keywords", True)]
    # a rule only the push's type satisfies is no near miss (the flood rule here)
    assert "flood" not in {c.rule_id for c in explanation.checks}


def test_fired_rules_and_flood_history(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    fired = explain_event(ruleset, event("刷单 加qq 12345678"))
    assert [c.rule_id for c in fired.fired] == ["job-scam"]
    assert all(c.held for c in fired.fired[0].conditions)
    t = 1_700_000_000
    flooded = explain_event(ruleset, event("hi", t), history=[(t - 5, "text"),
                                                             (t - 3, "text")])
    assert [c.rule_id for c in flooded.fired] == ["flood"]
    assert "3 messages within 60s" in flooded.fired[0].conditions[-1].detail
    # pushes of a type the rule does not see do not count towards its window
    other = explain_event(ruleset, event("hi", t), history=[(t - 5, "image"),
                                                           (t - 3, "image")])
    assert other.decision.empty


def test_the_live_engine_is_not_touched(rules_dir: Path) -> None:
    ruleset = load_ruleset(rules_dir)
    live = RuleEngine(ruleset)
    for _ in range(3):
        explain_event(ruleset, event("优惠"))
    assert live.evaluate(event("优惠")).hits[0].evidence.endswith("warning 1 of 2")


async def test_rules_test_openid_uses_the_followers_warnings(
        tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "bot.db"
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  path: {db}\nrules:\n  dir: {rules_dir}\n",
                      encoding="utf-8")
    engine = RuleEngine(load_ruleset(rules_dir))
    store = Store(db)
    await store.start()
    now = int(time.time())
    try:
        for i in range(2):  # warned twice, as the service records it
            e = event("优惠券", now - 100 + i)
            assert not (await store.record(e, engine.evaluate(e))).duplicate
    finally:
        await store.close()
    args = ["rules", "test", "--text", "优惠", "--config", str(config)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fires: ads -> warn" in out and "warning 1 of 2" in out
    assert main([*args, "--openid", USER]) == 0
    out = capsys.readouterr().out
    assert "2 by ads" in out
    assert "fires: ads -> blacklist" in out and "offence 3 after 2 warnings" in out
    assert main([*args[:-2], "--text", "刷单", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "no rule fires" in out and "near misses" in out
    assert "keywords held" in out and "contact did NOT hold" in out
