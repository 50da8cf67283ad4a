"""Text folding: every disguise spam uses folds to the plain form, spans map back."""

from __future__ import annotations

import pytest

from bot.core.normalize import Folded, contact_form, fold


@pytest.mark.parametrize(("text", "expected"), [
    ("加 微 信", "加微信"),
    ("加\u200b微\u200b信", "加微信"),
    ("加\ufeff微\u2060信", "加微信"),
    ("加-微-信!", "加微信"),
    ("加🌹微🌹信", "加微信"),
    ("加\u0336微\u0336信", "加微信"),          # strike-through combining overlay
    ("ＶＸ", "vx"),
    ("Vx", "vx"),
    ("刷單 貸款 賭博", "刷单贷款赌博"),          # traditional -> simplified
    ("微信號", "微信号"),
    ("➕vx", "加vx"),
    ("①③⑧", "138"),                          # NFKC already gives circled digits
    ("９９", "99"),
    ("时~时~彩", "时时彩"),
    ("约|炮 加=微=信 加+微+信 ¥$", "约炮加微信加微信"),  # math and currency symbols
    ("加\u3164微\uffa0信", "加微信"),          # Hangul fillers
    ("加微❤", "加微信"),
    ("加вх", "加vx"),                          # Cyrillic look-alikes
], ids=["spaces", "zero-width", "format-chars", "punctuation", "emoji", "combining",
        "full-width", "case", "traditional", "traditional-word", "heavy-plus", "circled",
        "full-width-digits", "tilde", "math-currency", "hangul-filler", "heart", "cyrillic"])
def test_fold(text: str, expected: str) -> None:
    assert fold(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("一三八", "138"), ("壹贰叁", "123"), ("➊➋➌", "123"), ("薇信", "微信"), ("威信", "微信"),
    ("+v", "加v"), ("+ V: abc", "加vabc"),
], ids=["numerals", "financial-numerals", "negative-circled", "wei-lookalike", "wei-2", "plus",
        "plus-spaced"])
def test_contact_form_folds_digits_and_lookalikes(text: str, expected: str) -> None:
    assert contact_form(text) == expected


def test_contact_folding_does_not_touch_the_keyword_form() -> None:
    # 一起 / 威信 stay words for keywords; only contact detection reads them as 1 / 微信
    assert fold("一起维护威信") == "一起维护威信"


def test_spans_map_back_to_the_original_text() -> None:
    folded = Folded("你好，加 微\u200b信：ＡＢＣ")
    start = folded.dense.index("加微信")
    span, text = folded.excerpt(start, start + 3)
    assert text == "加 微\u200b信"
    assert folded.original[span[0]:span[1]] == text
    start = folded.dense.index("abc")
    assert folded.excerpt(start, start + 3)[1] == "ＡＢＣ"


def test_expanding_characters_map_to_their_source() -> None:
    folded = Folded("x㈠y")  # NFKC: ㈠ -> (一), parentheses dropped, one char stays
    assert folded.dense == "x一y"
    assert folded.excerpt(1, 2)[1] == "㈠"
    ligature = Folded("aﬁb")  # one original character becomes two folded ones
    assert ligature.dense == "afib"
    assert ligature.excerpt(1, 3)[1] == "ﬁ"


def test_light_form_keeps_url_punctuation() -> None:
    folded = Folded("看 WWW。Example．com 吧")
    assert "www.example.com" in folded.light
    start = folded.light.index("www")
    assert folded.excerpt(start, start + 15, form="light")[1] == "WWW。Example．com"


def test_every_plus_form_is_known() -> None:
    # Folded.contact skips its own translate when no character of the text becomes "+"
    import sys
    import unicodedata

    from bot.core.normalize import PLUS_FORMS, _has_plus

    plus = [chr(c) for c in range(sys.maxunicode + 1)
            if unicodedata.normalize("NFKC", chr(c)) == "+"]
    assert sorted(plus) == sorted(PLUS_FORMS)
    assert all(_has_plus(f"a{char}b") for char in plus)


def test_plus_reads_as_jia_in_contacts_but_cplusplus_does_not() -> None:
    assert Folded("+V abc12345").contact.startswith("加v")
    assert "加" not in Folded("C++ vs JavaScript").contact
    assert Folded("＋Ｖ abc12345").contact.startswith("加v")
    for text in ("++V：abc12345", "+ +V abc12345", "＋＋V abc12345", "ok，++V abc12345",
                 "hi ++V：abc12345"):
        assert "加v" in Folded(text).contact, text
    assert "加" not in Folded("g++ and c++, 学Ｃ＋＋").contact
