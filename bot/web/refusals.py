"""Refused pushes in the log: each kind with a hint at its cause, at most once a minute."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

# Hints by the start of PushError.reason (bot.wechat.push): what an operator checks.
HINTS = (
    ("wechat.token is not configured", "set wechat.token (or the WECHAT_TOKEN environment "
     "variable) to the Token entered on the platform"),
    ("bad ", "check wechat.token (WECHAT_TOKEN) against the Token on the platform "
     "(Settings > Basic configuration > Server configuration); for msg_signature also "
     "wechat.encoding_aes_key. Occasional refusals from strangers are forged pushes"),
    ("timestamp too far", "check this server's clock (NTP): WeChat signs the time it sent"),
)
MAX_KINDS = 64  # reasons are a fixed set; a malformed body's reason text may vary


def hint_for(reason: str) -> str:
    """What to check for a refusal with this reason ('' when nothing useful to say)."""
    return next((hint for start, hint in HINTS if reason.startswith(start)), "")


@dataclass
class _Kind:
    logged_at: float
    unlogged: int = 0


class RefusalLog:
    """Logs a refused push at once the first time, then one line per ``every`` seconds
    per kind (what, status and reason) with how many went unlogged, so a flood of forged
    pushes costs a line a minute, not a line a push."""

    def __init__(self, logger: logging.Logger, *, every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._every, self._clock = logger, every, clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}

    def refused(self, status: int, reason: str, remote: str | None, what: str = "push"
                ) -> None:
        """Record one refusal; log it unless this kind was logged under ``every`` ago."""
        now = self._clock()
        key = (what, status, reason)
        if len(self._kinds) >= MAX_KINDS and key not in self._kinds:
            key = (what, status, "")  # one more kind would grow without bound
        kind = self._kinds.get(key)
        if kind is not None and now - kind.logged_at < self._every:
            kind.unlogged += 1
            return
        unlogged = kind.unlogged if kind is not None else 0
        self._kinds[key] = _Kind(now)
        hint = hint_for(reason)
        self._log.warning(
            "%s refused (%d) from %s: %s%s%s", what, status, remote or "?", reason,
            f". Hint: {hint}" if hint else "",
            f" ({unlogged} more like it since the last such line, not logged)"
            if unlogged else "")
