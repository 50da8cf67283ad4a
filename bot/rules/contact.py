"""Contact-drop detectors: obfuscated WeChat IDs, QQ numbers, phone numbers and URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import re2

from bot.core.normalize import Folded

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


def compile_re2(pattern: str) -> Any:
    """Compile with RE2 (linear time); raises ``ValueError`` with RE2's reason."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except Exception as exc:  # re2 raises its own Error type, not re.error
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(str(reason)) from None


# Patterns run on ``Folded.contact`` (separators gone, 薇/威 -> 微, + -> 加, numerals ->
# digits) except ``url``, which needs the dots and slashes of ``Folded.light``. Group 1
# is the evidence span. RE2 has no look-around, so boundaries are consumed explicitly.
_WECHAT = [
    # 加V, 加vx, ➕微信, 加个wx, 添加薇信 ... but not 增加微信支付 / 参加
    r"(?:^|[^增参更追])(加(?:我|个|下)?(?:vx|wx|v|微信|v信|weixin|wechat)(?:号)?)(?:[^a-z]|$)",
    # 加vabc12345: the bare v runs straight into the ID once separators are gone
    r"(加(?:我|个|下)?v[a-z0-9_-]{6,20})",
    # 微信号: abc_123 / v信 12345678
    r"((?:微信|v信)(?:号|id)?(?:是|为)?(?:[a-z][a-z0-9_-]{5,19}|\d{6,12}))(?:[^a-z0-9]|$)",
    # vx/wx + ID: the ID must hold a digit, or "wx.qq.com" (dots gone) would read as one
    r"((?:vx|wx)(?:号|id)?(?:是|为)?(?:[a-z][a-z_-]{0,12}\d[a-z0-9_-]{2,16}|\d{6,12}))"
    r"(?:[^a-z0-9]|$)",
]
# Spellings of 微信 meant to slip past a filter, followed by an ID (checked on the dense
# form, before 薇/威 are folded). Without the ID they are ordinary words too often:
# 安徽信息, 国产微芯片, 权威信号.
_WECHAT_DISGUISES = (r"((?:薇信|徽信|嶶信|溦信|v信|微芯|威信|薇x|vx)(?:号|id)?(?:是|为)?"
                     r"(?:[a-z][a-z0-9_-]{5,19}|\d{6,12}))(?:[^a-z0-9]|$)")
_QQ = [
    r"((?:qq|扣扣|抠抠|q号|q群)(?:号|群)?(?:是|为)?\d{5,11})(?:\D|$)",
    r"(企鹅(?:号|群)(?:是|为)?\d{5,11})(?:\D|$)",  # not 企鹅100000只 (penguins)
    r"(加(?:qq|扣扣|q)\d{5,11})(?:\D|$)",
]
_PHONE = [r"(?:^|\D)((?:0?86)?1[3-9]\d{9})(?:\D|$)"]
_TLDS = ("com|cn|net|org|top|xyz|vip|cc|me|io|info|club|site|shop|app|ly|tk|link|live|"
         "icu|fun|ink|pub|wang|ren|online|biz|co|tv")
_URL = [
    r"((?:https?://|www\.)[^\s]+)",
    r"(?:^|[^a-z0-9.@_-])((?:[a-z0-9-]+\.)+(?:" + _TLDS + r")(?::\d+)?(?:/[^\s]*)?)"
    r"(?:[^a-z0-9]|$)",
]


@dataclass(frozen=True, slots=True)
class ContactHit:
    """One contact detail found: its kind and where, in which folded form."""

    kind: str
    start: int
    end: int
    form: str = "contact"  # which form of the text (Folded.span's ``form``)


def _builtin(pattern: str) -> re.Pattern[str]:
    """Compile one of our own detector patterns with the standard engine.

    Admin regexes go to RE2 because nobody reviews them; these are ours, written
    without nested or overlapping quantifiers (linear on any input: a test feeds
    them pathological strings), and ``re`` runs them several times faster than the
    RE2 binding, whose every call converts the text to UTF-8 and back. ASCII makes
    digit and space classes mean what they mean in RE2.
    """
    return re.compile(pattern, re.ASCII)


class ContactDetector:
    """Finds each kind of contact detail in a folded text."""

    def __init__(self) -> None:
        self._patterns: dict[str, list[tuple[re.Pattern[str], str]]] = {
            "wechat_id": [(_builtin(p), "contact") for p in _WECHAT]
            + [(_builtin(_WECHAT_DISGUISES), "dense")],
            "qq": [(_builtin(p), "contact") for p in _QQ],
            "phone": [(_builtin(p), "contact") for p in _PHONE],
            "url": [(_builtin(p), "light") for p in _URL],
        }

    def find(self, folded: Folded, kinds: frozenset[str]) -> dict[str, ContactHit]:
        """The first hit of each asked kind found in ``folded``."""
        found: dict[str, ContactHit] = {}
        numbers: bool | None = None  # QQ and phone numbers share their prefilter
        for kind in kinds:
            if kind in _NUMBERS:
                if numbers is None:
                    numbers = _FIVE_DIGITS.search(folded.contact) is not None
                if not numbers:
                    continue
            elif not _PREFILTERS[kind](folded):
                continue
            for pattern, form in self._patterns[kind]:
                where, match = form, pattern.search(getattr(folded, form))
                if match is None and form == "contact" and folded.signed:
                    # "+" reads 加 (+V abc123) or splits a word (加+微+信): try both
                    where = "dense"  # contact_plain has the dense form's positions
                    match = pattern.search(folded.contact_plain)
                if match:
                    start, end = match.span(1)
                    found[kind] = ContactHit(kind, start, end, where)
                    break
        return found


# Cheap necessary conditions that skip most searches: every WeChat-ID pattern holds 加,
# 信, vx or wx (on the contact form) or a disguise with 信, 芯, 薇x or vx (on the
# dense form); QQ and phone numbers need five digits in a row; a URL needs a dot.
_WECHAT_HINT = re.compile(r"[加信]|vx|wx")
_DISGUISE_HINT = re.compile(r"[信芯]|薇x|vx")
_FIVE_DIGITS = re.compile(r"[0-9]{5}")
_NUMBERS = frozenset({"qq", "phone"})
_PREFILTERS = {
    "wechat_id": lambda folded: (_WECHAT_HINT.search(folded.contact) is not None
                                 or _DISGUISE_HINT.search(folded.dense) is not None),
    "url": lambda folded: "." in folded.light,
}

DETECTOR = ContactDetector()
