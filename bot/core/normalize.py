"""Text folding for matching: NFKC, case, format chars, separators, traditional Chinese."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any, Generic, TypeVar

from zhconv import zhconv

# Characters that spam writes in place of the one it means. Applied after NFKC,
# case-folding and traditional->simplified, to every text and every keyword alike, so
# only unambiguous stand-ins belong here (word-level look-alikes such as 薇信 stay in
# the contact table below or in the rules' keyword lists).
LOOKALIKES = {
    "➕": "加", "✚": "加", "╋": "加",
    "ⓥ": "v", "ⓧ": "x", "ⓦ": "w", "ⓠ": "q",
    "𝐯": "v", "𝐱": "x",
    "。": ".", "｡": ".", "．": ".", "﹒": ".",
    # 加微❤ / 加微♥: read before symbols are dropped
    "❤": "信", "♥": "信",
    # Cyrillic and Greek letters that pass for Latin ones (加вх = 加vx)
    "а": "a", "в": "v", "е": "e", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h",
    "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
}

# Contact detection only: digits written every way a phone number or QQ number gets
# disguised, and the homophones of 微 used in 加薇信 / 威信. One character to one
# character, so positions in the contact text are positions in the folded text.
_CONTACT_DIGITS = {
    "〇": "0", "零": "0", "洞": "0",
    "一": "1", "壹": "1", "幺": "1", "二": "2", "贰": "2", "两": "2", "三": "3", "叁": "3",
    "四": "4", "肆": "4", "五": "5", "伍": "5", "六": "6", "陆": "6", "七": "7", "柒": "7",
    "八": "8", "捌": "8", "九": "9", "玖": "9",
}
_CONTACT_WORDS = {"薇": "微", "威": "微", "徽": "微", "嶶": "微", "溦": "微", "+": "加",
                  "伽": "加", "芯": "信"}
for _digit in range(10):  # dingbat negative circled ➊..➓ and sans-serif ➀.. survive NFKC
    for _base in (0x2776, 0x2780, 0x278A):
        if _digit:
            _CONTACT_DIGITS[chr(_base + _digit - 1)] = str(_digit % 10)
CONTACT_TABLE = str.maketrans({**_CONTACT_DIGITS, **_CONTACT_WORDS})

# Unicode categories that never carry meaning between two characters: format chars
# (zero-width joiners, BOM, bidi marks), combining marks (strike-through overlays),
# controls, spaces and every kind of punctuation and symbol (math ~|=<>+, currency,
# modifiers, pictographs).
_DROP_CATEGORIES = frozenset({"Cf", "Cc", "Cs", "Co", "Cn", "Mn", "Me", "Zs", "Zl", "Zp",
                              "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk",
                              "So"})
_INVISIBLE = frozenset({"Cf", "Cc", "Cs", "Co", "Cn", "Mn", "Me"})
# Hangul fillers: letters (Lo) by category, blank on screen, used to split words.
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")


def _fold_char(char: str, *, light: bool, keep: frozenset[str] = frozenset()) -> str:
    """What one original character becomes; '' when it is ignored for matching."""
    out = []
    for piece in unicodedata.normalize("NFKC", char):
        for lower in piece.casefold():
            ch = LOOKALIKES.get(lower, lower)
            if ord(ch) >= 0x2E80:  # CJK range: only there can zhconv change anything
                ch = _simplified().get(ch, ch)
            if ch not in keep and _dropped(ch, light):
                continue
            out.append(ch)
    return "".join(out)


@cache
def _simplified() -> dict[str, str]:
    """zhconv's zh-cn table, one character to one (phrases need context we do not have)."""
    # Give zhconv the full path: its default loader leaves the file open (ResourceWarning).
    zhconv.loaddict(os.path.join(os.path.dirname(zhconv.__file__), "zhcdict.json"))
    return {k: v for k, v in zhconv.getdict("zh-cn").items() if len(k) == 1 and len(v) == 1}


def _dropped(ch: str, light: bool) -> bool:
    if ch in _FILLERS:
        return True
    category = unicodedata.category(ch)
    if light:  # only invisible characters go; spaces and punctuation delimit URLs
        return category in _INVISIBLE and not ch.isspace()
    return category in _DROP_CATEGORIES or ch.isspace()


class FoldTable(dict[int, str]):
    """A ``str.translate`` table filled on first sight of each character (C-speed after)."""

    def __init__(self, light: bool, keep: str = ""):
        super().__init__()
        self.light = light
        self.keep = frozenset(keep)
        for code in range(128):
            self[code] = _fold_char(chr(code), light=light, keep=self.keep)

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code), light=self.light, keep=self.keep)
        self[code] = folded
        return folded


DENSE = FoldTable(light=False)
LIGHT = FoldTable(light=True)
# The dense form keeping "+", which reads as 加 in contact details (+V abc12345)
SIGNED = FoldTable(light=False, keep="+")


def fold(text: str) -> str:
    """The matching form of ``text`` (keywords, except phrases and regexes use it)."""
    return text.translate(DENSE)


# Every character NFKC turns into "+" (a test checks the whole of Unicode).
PLUS_FORMS = "+\ufe62\uff0b\u207a\u208a\ufb29"


def _has_plus(text: str) -> bool:
    # six C-level searches: several times cheaper than a regex or a set over the text
    return ("+" in text or "\uff0b" in text or "\ufe62" in text or "\u207a" in text
            or "\u208a" in text or "\ufb29" in text)


def contact_form(text: str) -> str:
    """The contact form of an original text: its dense form keeping "+", with disguised
    digits and contact homophones resolved (one character to one)."""
    return Folded(text).contact


def _offsets(text: str, table: FoldTable, length: int) -> list[int]:
    """For each character of the folded text (``length`` long), the index of the
    original one it came from."""
    # Nearly always each kept character folds to exactly one: then the kept ones are
    # the answer, and one comprehension finds them.
    starts = [index for index, char in enumerate(text) if table[ord(char)]]
    if len(starts) == length:
        return starts
    starts = []  # some character folds to several (a ligature): each repeats its index
    for index, char in enumerate(text):
        starts.extend([index] * len(table[ord(char)]))
    return starts


T = TypeVar("T")


class _once(Generic[T]):  # noqa: N801 - used as a decorator, like cached_property
    """A per-instance value computed on first access, then read as a plain attribute.

    ``functools.cached_property`` takes a lock on every first access before Python
    3.12; a Folded is built per text per push and most of its forms are read once.
    """

    def __init__(self, compute: Callable[[Any], T]):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, instance: Any, owner: type | None = None) -> T:
        if instance is None:
            return self  # type: ignore[return-value]
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


class Folded:
    """One original text with its folded forms, mapping spans back lazily (only on hits)."""

    def __init__(self, original: str):
        self.original = original
        self.dense = original.translate(DENSE)

    def __repr__(self) -> str:
        return f"Folded({self.original!r})"

    @_once
    def signed(self) -> bool:
        """Whether a "+" is written (any form): the only thing the contact form keeps
        that the dense form drops."""
        return _has_plus(self.original)

    @_once
    def _signed_form(self) -> str:
        """The dense form keeping "+" (what the contact form's positions count in)."""
        return self.original.translate(SIGNED)

    @_once
    def contact(self) -> str:
        """The dense form keeping "+", digits and contact look-alikes folded."""
        if not self.signed:
            return self.contact_plain  # the same text, one translate cheaper
        signed = self._signed_form
        if "++" in signed:
            signed = self._blank_cplusplus(signed)
        return signed.translate(CONTACT_TABLE)

    def _blank_cplusplus(self, signed: str) -> str:
        """Blank the "++" of C++ or g++ (two "+" written side by side right after a letter
        or digit): a name, not 加加. Blanks keep positions and match nothing; "++V" and
        "hi ++V" stay 加加v."""
        starts, original, chars = self._contact_starts, self.original, list(signed)
        for i in range(len(chars) - 1):
            at = starts[i]
            if chars[i] == chars[i + 1] == "+" and starts[i + 1] == at + 1 and at:
                before = DENSE[ord(original[at - 1])][-1:]
                if before.isascii() and before.isalnum():
                    chars[i] = chars[i + 1] = " "
        return "".join(chars)

    @_once
    def contact_plain(self) -> str:
        """The contact form without "+": in 加+微+信 the signs only split the word."""
        return self.dense.translate(CONTACT_TABLE)

    @_once
    def light(self) -> str:
        """NFKC + case folding only, punctuation and spaces kept: the form URLs are found in."""
        return self.original.translate(LIGHT)

    @_once
    def _dense_starts(self) -> list[int]:
        return _offsets(self.original, DENSE, len(self.dense))

    @_once
    def _light_starts(self) -> list[int]:
        return _offsets(self.original, LIGHT, len(self.light))

    @_once
    def _contact_starts(self) -> list[int]:
        return _offsets(self.original, SIGNED, len(self._signed_form))

    def span(self, start: int, end: int, *, form: str = "dense") -> tuple[int, int]:
        """The original span a span ``[start, end)`` of ``form`` (dense, light, contact)
        came from."""
        starts = (self._light_starts if form == "light" else
                  self._contact_starts if form == "contact" else self._dense_starts)
        if not starts or end <= start:
            return (0, 0)
        return starts[start], starts[end - 1] + 1

    def excerpt(self, start: int, end: int, *, form: str = "dense"
                ) -> tuple[tuple[int, int], str]:
        """The original span and its text, for evidence."""
        span = self.span(start, end, form=form)
        return span, self.original[span[0]:span[1]]
