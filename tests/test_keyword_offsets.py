"""The keyword automaton runs over UTF-8 bytes; hits map back to character offsets."""

from __future__ import annotations

from pathlib import Path

from bot.core.models import Event
from bot.rules import RuleEngine, load_ruleset
from bot.rules.compiled import FEW_HITS, as_bytes, char_offsets


def test_byte_offsets_map_back_to_characters() -> None:
    text = "a加b👍c"
    offsets = char_offsets(text)
    assert len(offsets) == len(as_bytes(text)) + 1
    assert offsets == [0, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5]
    haystack = as_bytes(text)
    start = haystack.index(as_bytes("b👍"))
    stop = start + len(as_bytes("b👍"))
    assert text[offsets[start]:offsets[stop]] == "b👍"


def test_few_and_many_keyword_hits_map_to_the_same_spans(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: words\n    keywords: [微信, ab]\n    action: log\n", encoding="utf-8")
    engine = RuleEngine(load_ruleset(tmp_path))

    def evidence(text: str) -> str:
        event = Event(openid="oOffsets0000000000000000001", account="gh", create_time=1,
                      msg_type="text", msg_id="1", texts={"content": text})
        return engine.evaluate(event).hits[0].evidence

    # 👍 is four bytes and 加 three: the first hit's span is counted in characters
    assert evidence("👍加微信") == "keyword '微信' in content at 2-4: \"微信\""
    many = "👍加" + "微信" * (FEW_HITS + 1)  # past FEW_HITS: mapped through the table
    assert evidence(many) == "keyword '微信' in content at 2-4: \"微信\""
    assert evidence("xx ab") == "keyword 'ab' in content at 3-5: \"ab\""  # ASCII: bytes
