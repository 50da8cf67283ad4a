"""Retry suppression: WeChat re-sends a push it got no answer to, even mid-handling."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

# WeChat retries three times, 5 s apart: an answer must be remembered past the last one.
KEEP_SECONDS = 30.0


class InMemoryRecentPushes:
    """Remembers the answer to recent pushes by dedup key, for ``keep_seconds`` each.

    The first push with a key gets ``None`` from :meth:`claim` and must call
    :meth:`finish` or :meth:`forget`; a retry gets the first one's future and answers
    what it answers, without running the rules again (which would count it twice
    towards a flood or a warning). ``max_entries`` bounds memory under a flood of
    pushes; the store's unique key still catches a retry older than this memory.
    """

    def __init__(self, keep_seconds: float = KEEP_SECONDS, max_entries: int = 500_000,
                 clock: Callable[[], float] = time.monotonic):
        self.keep_seconds = keep_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._answers: OrderedDict[str, tuple[float, asyncio.Future[tuple[str, str]]]] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self._answers)

    def claim(self, key: str) -> asyncio.Future[tuple[str, str]] | None:
        """None for a new push (now claimed); the pending or known answer for a retry."""
        now = self._clock()
        self._expire(now)
        known = self._answers.get(key)
        if known is not None:
            return known[1]
        self._answers[key] = (now, asyncio.get_running_loop().create_future())
        return None

    def finish(self, key: str, body: str, content_type: str) -> None:
        """Record the answer given to the push with ``key``; retries will repeat it."""
        entry = self._answers.get(key)
        if entry is not None and not entry[1].done():
            entry[1].set_result((body, content_type))

    def forget(self, key: str) -> None:
        """The push failed before it was committed: let a retry be handled afresh."""
        entry = self._answers.pop(key, None)
        if entry is not None and not entry[1].done():
            entry[1].cancel()

    def _expire(self, now: float) -> None:
        answers = self._answers
        while answers:
            claimed_at, future = next(iter(answers.values()))
            if now - claimed_at < self.keep_seconds and len(answers) <= self.max_entries:
                return
            answers.popitem(last=False)
            if not future.done():
                future.cancel()
