"""A small labelled set written for the tests: two clearly different kinds of text."""

from __future__ import annotations

import json
from pathlib import Path

_SPAM_HEADS = ["兼职日结", "高佣返利", "免费领取", "内部渠道", "稳赚不赔", "日入过千"]
_SPAM_TAILS = ["私聊我", "速来私我", "名额有限快上车", "扫码进群领福利", "看我主页", "滴滴我"]
_HAM_HEADS = ["今天的外卖", "老师布置的作业", "周末的天气", "这篇文章", "公交车站", "孩子的学校"]
_HAM_TAILS = ["挺好的，谢谢", "什么时候开始呢？", "我觉得还可以。", "请问在哪里看？",
              "味道不错，下次再来", "辛苦了！"]


def spam_texts() -> list[str]:
    return [f"{h}，{t}" for h in _SPAM_HEADS for t in _SPAM_TAILS]


def ham_texts() -> list[str]:
    return [f"{h}{t}" for h in _HAM_HEADS for t in _HAM_TAILS]


def write_jsonl(path: Path) -> Path:
    """Every test text as JSONL ``{"text", "label"}``, plus an extra key that is ignored."""
    rows = [{"text": t, "label": "spam", "note": "x"} for t in spam_texts()]
    rows += [{"text": t, "label": "ham"} for t in ham_texts()]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    return path
