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
        # key -> (claimed at, the answer once given, the future retries wait on): the
        # future is made only when a retry comes (most pushes never see one). Tuples,
        # not lists: holding only strings and numbers, the collector stops tracking
        # them, and a full collection does not walk half a million remembered pushes.
        self._answers: OrderedDict[str, tuple[float, tuple[str, str] | None,
                                              asyncio.Future[tuple[str, str]] | None]] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self._answers)

    def claim(self, key: str) -> asyncio.Future[tuple[str, str]] | None:
        """None for a new push (now claimed); the pending or known answer for a retry."""
        now = self._clock()
        self._expire(now)
        known = self._answers.get(key)
        if known is None:
            self._answers[key] = (now, None, None)
            return None
        claimed_at, answer, future = known
        if future is None:
            future = asyncio.get_running_loop().create_future()
            if answer is not None:
                future.set_result(answer)
            self._answers[key] = (claimed_at, answer, future)  # keeps its place in order
        return future

    def finish(self, key: str, body: str, content_type: str) -> None:
        """Record the answer given to the push with ``key``; retries will repeat it."""
        entry = self._answers.get(key)
        if entry is None or entry[1] is not None:
            return
        answer = (body, content_type)
        self._answers[key] = (entry[0], answer, entry[2])
        if entry[2] is not None and not entry[2].done():
            entry[2].set_result(answer)

    def forget(self, key: str) -> None:
        """The push failed before it was committed: let a retry be handled afresh."""
        entry = self._answers.pop(key, None)
        if entry is not None and entry[2] is not None and not entry[2].done():
            entry[2].cancel()

    def _expire(self, now: float) -> None:
        answers = self._answers
        while answers:
            claimed_at, _answer, future = next(iter(answers.values()))
            if now - claimed_at < self.keep_seconds and len(answers) <= self.max_entries:
                return
            answers.popitem(last=False)
            if future is not None and not future.done():
                future.cancel()
