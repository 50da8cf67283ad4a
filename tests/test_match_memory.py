"""The engine remembers recent texts' matches: the same answers, only cheaper."""

from __future__ import annotations

from pathlib import Path

from bot.classifier.train import fit
from bot.core.models import Event, Sample
from bot.rules import RuleEngine, load_ruleset
from bot.rules.compiled import MATCH_MEMORY
from tests.learning_data import ham_texts, spam_texts

RULES = """
rules:
  - id: contact-drop
    keywords: [加微信]
    action: blacklist
  - id: model-spam
    msg_types: [text]
    classifier: {min_score: 0.8}
    action: blacklist
    duration: 7d
  - id: flood
    flood: {messages: 3, seconds: 60}
    action: log
"""


def push(text: str, number: int, openid: str = "oMemory00000000000000000001") -> Event:
    return Event(openid=openid, account="gh", create_time=1_700_000_000 + number,
                 msg_type="text", msg_id=str(number), texts={"content": text})


def engine_on(tmp_path: Path, rules: str = RULES) -> RuleEngine:
    (tmp_path / "r.yaml").write_text(rules, encoding="utf-8")
    return RuleEngine(load_ruleset(tmp_path))


def test_a_repeated_text_gets_the_answer_a_fresh_engine_gives(tmp_path: Path) -> None:
    remembering = engine_on(tmp_path)
    for number in range(5):
        text = "请加微信 abc12345 领福利" if number % 2 else "你好"
        fresh = engine_on(tmp_path)
        for earlier in range(number):  # the same flood history, evaluated afresh
            fresh.evaluate(push("x", earlier))
        assert remembering.evaluate(push(text, number)) == fresh.evaluate(push(text, number))


def test_flood_still_counts_every_push_of_a_remembered_text(tmp_path: Path) -> None:
    engine = engine_on(tmp_path)
    fired = [[h.rule_id for h in engine.evaluate(push("你好", n)).hits] for n in range(4)]
    assert fired == [[], [], ["flood"], ["flood"]]
    other = push("你好", 4, openid="oMemory00000000000000000002")
    assert engine.evaluate(other).empty, "another follower's count starts at one"


def test_a_new_model_or_new_rules_are_never_answered_from_memory(tmp_path: Path) -> None:
    engine = engine_on(tmp_path)
    spam = "高佣返利，私聊我"
    assert engine.evaluate(push(spam, 0)).empty  # no model: the classifier never holds
    model = fit([Sample(t, True) for t in spam_texts()]
                + [Sample(t, False) for t in ham_texts()], now=1_700_000_000).prepare()
    engine.use_model(model)
    assert [h.rule_id for h in engine.evaluate(push(spam, 100)).hits] == ["model-spam"]
    engine.use_model(None)
    assert engine.evaluate(push(spam, 200)).empty
    (tmp_path / "r.yaml").write_text(RULES.replace("[加微信]", "[私聊]"), encoding="utf-8")
    engine.replace(load_ruleset(tmp_path))
    assert [h.rule_id for h in engine.evaluate(push(spam, 300)).hits] == ["contact-drop"]


def test_the_memory_is_bounded(tmp_path: Path) -> None:
    engine = engine_on(tmp_path)
    for number in range(MATCH_MEMORY + 10):
        engine.evaluate(push(f"消息 {number}", number * 100))  # apart: no flood
    assert len(engine.ruleset._recent) <= MATCH_MEMORY  # noqa: SLF001 - the bound itself
