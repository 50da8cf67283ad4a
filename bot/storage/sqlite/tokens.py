"""The TokenCache port in the ``kv`` table, shared by every process on the database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from bot.storage.ports import CachedToken
from bot.storage.sqlite import kv
from bot.storage.sqlite.store import Store


class SqliteTokenCache:
    """TokenCache in ``kv``, through the store's owning thread."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self._store = store
        self._clock = clock

    @staticmethod
    def key(appid: str) -> str:
        """The kv key holding ``appid``'s token."""
        return kv.TOKEN_PREFIX + appid

    async def load(self, appid: str) -> CachedToken | None:
        """Read the cached token (None when absent or unreadable)."""
        key = self.key(appid)
        value = await self._store.call(lambda db: kv.get(db, key))
        return CachedToken.loads(value)

    async def save(self, appid: str, token: CachedToken) -> None:
        """Store the token with its expiry as JSON."""
        key, now = self.key(appid), int(self._clock())
        value = token.dumps()
        await self._store.call(lambda db: kv.put(db, key, value, now))

    @asynccontextmanager
    async def exclusive(self, appid: str) -> AsyncIterator[None]:
        """Nothing to hold: one service process owns the file (its client is single-flight)."""
        yield
