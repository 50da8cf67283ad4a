"""Flood windows and warn ladders shared by every replica (``window_events``).

The engine stays pure and synchronous: it reads and writes its windows through the
:class:`~bot.rules.engine.WindowState` Protocol. Around one evaluation the webhook
opens :meth:`PostgresWindows.around`: a transaction that takes the follower's advisory
lock (so one follower's pushes are counted one at a time, whichever replica has them),
loads the follower's recorded timestamps into :attr:`flood` / :attr:`warns`, lets the
engine run on them, and writes what it added or reset before COMMIT. Rows carry the
push's dedup key: a WeChat retry evaluated on a second replica counts once.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from bot.core.models import Event
from bot.core.windows import SlidingWindows


@dataclass
class _Follower:
    """One follower's loaded windows while one of their pushes is evaluated."""

    dedup_key: str
    times: dict[str, list[int]] = field(default_factory=dict)
    counted: set[str] = field(default_factory=set)  # keys this push is already in
    added: list[tuple[str, int, int, int]] = field(default_factory=list)  # key, at, horizon, keep
    reset: set[str] = field(default_factory=set)


class _Namespace:
    """A WindowState over the loaded followers (flood or warn keys); keys end ``|openid``.

    Outside :meth:`PostgresWindows.around` (nothing loaded for the follower) it falls
    back to process-local windows, as the SQLite backend always uses.
    """

    def __init__(self, prefix: str, loaded: dict[str, _Follower]):
        self._prefix = prefix
        self._loaded = loaded
        self._local = SlidingWindows()

    def _follower(self, key: str) -> _Follower | None:
        return self._loaded.get(key.rpartition("|")[2])

    def add(self, key: str, now: int, horizon: int, keep: int) -> None:
        follower = self._follower(key)
        if follower is None:
            self._local.add(key, now, horizon, keep)
            return
        name = self._prefix + key
        if name in follower.counted:
            return  # a retry of a push already counted (perhaps on another replica)
        follower.counted.add(name)
        insort(follower.times.setdefault(name, []), now)
        follower.added.append((name, now, horizon, keep))

    def count(self, key: str, now: int, seconds: int) -> int:
        follower = self._follower(key)
        if follower is None:
            return self._local.count(key, now, seconds)
        times = follower.times.get(self._prefix + key, [])
        return bisect_right(times, now) - bisect_right(times, now - seconds)

    def reset(self, key: str) -> None:
        follower = self._follower(key)
        if follower is None:
            self._local.reset(key)
            return
        name = self._prefix + key
        follower.times.pop(name, None)
        follower.added = [a for a in follower.added if a[0] != name]
        follower.reset.add(name)


class PostgresWindows:
    """The shared flood and warn windows: hand :attr:`flood` and :attr:`warns` to the
    engine, and evaluate each push inside :meth:`around`."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool
        self._loaded: dict[str, _Follower] = {}
        self.flood = _Namespace("f:", self._loaded)
        self.warns = _Namespace("w:", self._loaded)
        # Whether evaluating this push reads any window (set by the wiring from the
        # rules in force); when not, no database round trip is made.
        self.wanted: Callable[[Event], bool] = lambda _event: True

    @asynccontextmanager
    async def around(self, event: Event) -> AsyncIterator[None]:
        """Load ``event``'s follower's windows (under their lock) for the block; write
        what the block counted before the lock is released."""
        if not self.wanted(event):
            yield
            return
        openid = event.openid
        async with self._pool().acquire() as conn, conn.transaction():
            follower = _Follower(event.dedup_key)
            for key, at, dedup_key in await conn.fetch("SELECT * FROM bot_window_load($1)",
                                                       openid):
                follower.times.setdefault(key, []).append(at)
                if dedup_key == event.dedup_key:
                    follower.counted.add(key)
            # No await between loading and the block's (synchronous) evaluation, so no
            # other push of this replica sees or replaces this follower's entry.
            self._loaded[openid] = follower
            try:
                yield
            finally:
                self._loaded.pop(openid, None)
            if follower.reset or follower.added:
                added = follower.added
                await conn.execute(
                    "SELECT bot_window_write($1, $2, $3, $4, $5, $6, $7)", openid,
                    follower.dedup_key, sorted(follower.reset), [a[0] for a in added],
                    [a[1] for a in added], [a[2] for a in added], [a[3] for a in added])
