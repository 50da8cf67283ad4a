"""Retry suppression: WeChat re-sends a push it got no answer to, even mid-handling."""

from __future__ import annotations

import asyncio
from collections import OrderedDict


class InMemoryRecentPushes:
    """Remembers the answer to recent pushes by dedup key, bounded in size.

    The first push with a key gets ``None`` from :meth:`claim` and must call
    :meth:`finish` or :meth:`forget`; a retry gets the first one's future and answers
    what it answers. A store with a unique key catches retries older than this memory.
    """

    def __init__(self, max_entries: int = 20000):
        self.max_entries = max_entries
        self._answers: OrderedDict[str, asyncio.Future[tuple[str, str]]] = OrderedDict()

    def claim(self, key: str) -> asyncio.Future[tuple[str, str]] | None:
        """None for a new push (now claimed); the pending or known answer for a retry."""
        known = self._answers.get(key)
        if known is not None:
            return known
        self._answers[key] = asyncio.get_running_loop().create_future()
        while len(self._answers) > self.max_entries:
            _, oldest = self._answers.popitem(last=False)
            if not oldest.done():
                oldest.cancel()
        return None

    def finish(self, key: str, body: str, content_type: str) -> None:
        """Record the answer given to the push with ``key``; retries will repeat it."""
        future = self._answers.get(key)
        if future is not None and not future.done():
            future.set_result((body, content_type))

    def forget(self, key: str) -> None:
        """The push failed before it was committed: let a retry be handled afresh."""
        future = self._answers.pop(key, None)
        if future is not None and not future.done():
            future.cancel()
