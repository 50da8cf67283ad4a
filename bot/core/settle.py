"""How a sent batch is settled, and when to send: pure decisions, time passed in."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from bot.core.errors import (
    BatchTooLargeError,
    CredentialError,
    InvalidOpenIDError,
    QuotaError,
    RetryableError,
    TokenError,
    WeChatAPIError,
)
from bot.core.outbox import CLOCK_SLACK, QueueState

BEIJING_OFFSET = 8 * 3600  # WeChat's daily quotas reset at midnight, Beijing time (UTC+8)


class Verdict(StrEnum):
    """How a sent (or refused) batch is settled."""

    DONE = "done"
    RETRY = "retry"  # back to pending, not before ``not_before``
    PAUSE = "pause"  # back to pending; all sending stops until ``not_before``
    SPLIT = "split"  # 40032: send the halves
    BISECT = "bisect"  # 40003/49003: find the bad OpenIDs by halving
    FAIL = "fail"  # final for these rows


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, capped, times U(0.5, 1)."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        raw = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        return raw * rng.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The verdict for a batch, with when to try again and what to record."""

    verdict: Verdict
    not_before: float = 0.0
    errcode: int | None = None
    errmsg: str = ""


def next_minute(now: float) -> float:
    """The start of the next wall-clock minute, plus a second of slack (45011)."""
    return (int(now) // 60 + 1) * 60 + 1.0


def daily_pause_until(now: float, *, retry_every: float = 3600.0) -> float:
    """When to try again after 45009: the quota reset at Beijing midnight, or within an hour
    (an admin can clear the quota on the platform), whichever comes first."""
    midnight = ((int(now) + BEIJING_OFFSET) // 86400 + 1) * 86400 - BEIJING_OFFSET
    return min(midnight + 60.0, now + retry_every)


def settle(  # noqa: PLR0911 - one return per error class is the point: a flat table
        error: WeChatAPIError | None, *, size: int, attempts: int, now: float,
        backoff: Backoff, rng: random.Random) -> Settlement:
    """Sort the outcome of one call in one place: done, retry when, pause, split or fail."""
    if error is None:
        return Settlement(Verdict.DONE)
    code, msg = error.errcode, error.errmsg
    if isinstance(error, QuotaError):
        if error.scope == "minute":  # the whole API, not this batch: every call would fail
            return Settlement(Verdict.PAUSE, next_minute(now), code, msg)
        return Settlement(Verdict.PAUSE, daily_pause_until(now), code, msg)
    if isinstance(error, CredentialError):
        return Settlement(Verdict.PAUSE, now + 600.0, code, msg)
    if isinstance(error, RetryableError | TokenError):
        return Settlement(Verdict.RETRY, now + backoff.delay(attempts, rng), code, msg)
    if isinstance(error, BatchTooLargeError) and size > 1:
        return Settlement(Verdict.SPLIT, errcode=code, errmsg=msg)
    if isinstance(error, InvalidOpenIDError) and size > 1:
        return Settlement(Verdict.BISECT, errcode=code, errmsg=msg)
    return Settlement(Verdict.FAIL, errcode=code, errmsg=msg)


def wait_before_send(state: QueueState, now: float, *, batch_size: int, max_delay: float,
                     flush: bool, idle: float) -> float:
    """Seconds to wait before sending (0: send now). Full batch, or the oldest is due."""
    if state.paused_until > now:
        return state.paused_until - now
    if state.ready >= batch_size or (state.ready and flush):
        return 0.0
    waits = [idle]
    if state.ready and state.oldest_created is not None:
        created = state.oldest_created
        # created "after" now: before the clock went back, so its delay is over
        waits.append(0.0 if created > now + CLOCK_SLACK else created + max_delay - now)
    if state.next_not_before is not None:
        waits.append(state.next_not_before - now)
    return max(0.0, min(waits))
