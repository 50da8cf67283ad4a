"""Paging through the blacklist: where the next page starts, retries, progress (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.core.errors import QuotaError, RetryableError, TokenError


class BlacklistPage(Protocol):
    """What a getblacklist page carries (``bot.wechat.api.BlacklistPage`` fits)."""

    @property
    def total(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def openids(self) -> list[str]: ...
    @property
    def next_openid(self) -> str: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries of a failed page: ``attempts`` in all, exponential delay, capped."""

    attempts: int = 5
    base: float = 1.0
    cap: float = 60.0

    def delay(self, failed: int, exc: BaseException) -> float:
        """Seconds to wait after the ``failed``-th failure (45011 waits out the minute)."""
        if getattr(exc, "errcode", None) == 45011:
            return self.cap
        return min(self.cap, self.base * 2 ** (failed - 1))


def is_retryable(exc: BaseException) -> bool:
    """Transient failures worth another try: busy, 5xx, timeouts, per-minute quota."""
    if isinstance(exc, QuotaError):
        return exc.scope == "minute"
    return isinstance(exc, RetryableError | TokenError)


def next_begin(page: BlacklistPage, begin: str, seen: set[str], new: int
               ) -> tuple[str | None, str]:
    """Where the next page starts, or None and why paging ends.

    ``seen`` holds every begin_openid used so far; ``new`` how many OpenIDs this page
    added that earlier pages had not listed. ``total`` never ends paging: OpenIDs kept
    from earlier pages may have been removed since, so reaching it says nothing about
    the pages still ahead of the cursor.
    """
    if page.count == 0 or not page.openids:
        return None, "count 0"
    if not page.next_openid:
        return None, "empty next_openid"
    if page.next_openid in seen or page.next_openid == begin:
        return None, "repeated next_openid"
    if new == 0:
        return None, "no new OpenIDs on a page (the API is looping)"
    return page.next_openid, ""


# Why paging ended (``next_begin``'s reasons, kept short for tests and metrics), in words.
_ENDS = {
    "count 0": "WeChat listed no more OpenIDs (the end of the list)",
    "empty next_openid": "the last page had no next_openid (the end of the list)",
    "repeated next_openid": "WeChat repeated a next_openid; stopped there rather than loop",
}


def end_text(end: str) -> str:
    """Why paging ended, for an operator: 'count 0' is WeChat's wording, not theirs."""
    return _ENDS.get(end, end)


@dataclass
class Progress:
    """How far the paging got, for the CLI's progress line and the log."""

    pages: int = 0
    kept: int = 0
    total: int = 0
    retries: int = 0
    end: str = ""
