"""Our own contact patterns run on the standard engine: they must stay linear."""

from __future__ import annotations

import pytest

from bot.core.normalize import Folded
from bot.rules.contact import DETECTOR

PATHOLOGICAL = [
    "a" * 20000 + "!",
    "1" * 20000 + "x",
    "a." * 10000 + "-",
    "加" * 5000 + "v" * 5000 + "_" * 5000,
    "wx" + "a1" * 8000 + "!",
    "qq" + "9" * 20000,
    "www." + "a" * 20000,
    ("a-" * 5000 + ".") * 2 + "com" + "/" * 5000,
]


@pytest.mark.timeout(10)  # a backtracking pattern would hang here, not merely run slow
@pytest.mark.parametrize("text", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_contact_patterns_do_not_backtrack(text: str) -> None:
    found = DETECTOR.find(Folded(text), frozenset({"wechat_id", "qq", "phone", "url"}))
    assert isinstance(found, dict)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("加 V ： abc12345", "wechat_id"), ("扣扣 ① ② ③ ④ ⑤ ⑥ ⑦", "qq"),
     ("电话 138 0013 8000", "phone"), ("看这里 www.example.com/x", "url")],
)
def test_contact_kinds_still_found(text: str, kind: str) -> None:
    assert kind in DETECTOR.find(Folded(text), frozenset({kind}))
