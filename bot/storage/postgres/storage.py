"""``PostgresStorage``: every storage port over one asyncpg pool, for N replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from bot.core.errors import BotError
from bot.core.models import Decision, Event, Recorded, Sample
from bot.storage.ports import CachedToken
from bot.storage.postgres import records
from bot.storage.postgres.actions import PostgresActionQueue, get_kv, put_kv
from bot.storage.postgres.console import PostgresConsole
from bot.storage.postgres.schema import MODELS_KEPT, TOKEN_LOCK, migrate
from bot.storage.postgres.snapshots import PostgresLeases, PostgresSnapshots
from bot.storage.postgres.windows import PostgresWindows
from bot.storage.sqlite import kv

TOKEN_PREFIX = kv.TOKEN_PREFIX  # + appid: {"token", "expires_at"}
log = logging.getLogger(__name__)


class PostgresRecorder:
    """The Recorder port: one push, its decision and actions, in one transaction."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], *, dry_run: bool,
                 clock: Callable[[], float]):
        self._pool, self._dry_run, self._clock = pool, dry_run, clock

    async def record(self, event: Event, decision: Decision) -> Recorded:
        return await records.record(self._pool(), event, decision, int(self._clock()),
                                    dry_run=self._dry_run)


class PostgresTokenCache:
    """The TokenCache port in ``kv``; :meth:`exclusive` is the cross-replica fetch lock."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], clock: Callable[[], float]):
        self._pool, self._clock = pool, clock

    async def load(self, appid: str) -> CachedToken | None:
        value = await get_kv(self._pool(), TOKEN_PREFIX + appid)
        return CachedToken.loads(value)

    async def save(self, appid: str, token: CachedToken) -> None:
        value = token.dumps()
        await put_kv(self._pool(), TOKEN_PREFIX + appid, value, int(self._clock()))

    @asynccontextmanager
    async def exclusive(self, appid: str) -> AsyncIterator[None]:
        """One replica at a time fetches ``appid``'s token: a transaction's advisory lock,
        so it ends with the transaction however the holder stops (an unlock statement cut
        off by a cancellation would leave a session lock on a pooled connection, and
        every later fetch waiting on it); a replica that dies drops it with its socket."""
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                               TOKEN_LOCK & 0x7FFFFFFF, appid)
            yield


class PostgresReadModel:
    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool

    async def pending_count(self) -> int:
        return await records.pending_count(self._pool())


class PostgresRetention:
    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool

    async def purge_content(self, before: int, limit: int, now: float) -> int:
        return await records.purge_content(self._pool(), before, limit, now)


class PostgresClassifierStore:
    """The ClassifierStore port: samples and models shared by every replica."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]):
        self._pool = pool

    async def latest_model_id(self) -> int:
        return int(await self._pool().fetchval("SELECT coalesce(max(id), 0) FROM models"))

    async def model_ids(self) -> list[int]:
        return [r[0] for r in await self._pool().fetch("SELECT id FROM models ORDER BY id DESC")]

    async def model_blob(self, model_id: int) -> bytes | None:
        blob = await self._pool().fetchval("SELECT blob FROM models WHERE id = $1", model_id)
        return None if blob is None else bytes(blob)

    async def save_model(self, blob: bytes, *, trained_at: int, samples: int, source: str,
                         unless_newer_than: int | None = None) -> int:
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE models IN SHARE ROW EXCLUSIVE MODE")
            latest = await conn.fetchval("SELECT coalesce(max(id), 0) FROM models")
            if unless_newer_than is not None and latest != unless_newer_than:
                return 0
            model_id = int(await conn.fetchval(
                "INSERT INTO models (trained_at, samples, source, blob) VALUES ($1, $2, $3, $4)"
                " RETURNING id", trained_at, samples, source, blob))
            await conn.execute("DELETE FROM models WHERE id NOT IN (SELECT id FROM models"
                               " ORDER BY id DESC LIMIT $1)", MODELS_KEPT)
        return model_id

    async def samples(self) -> list[Sample]:
        return [Sample(r[0], r[1] == "spam") for r in
                await self._pool().fetch("SELECT text, label FROM samples ORDER BY id")]

    async def newest_sample_at(self) -> int:
        return int(await self._pool().fetchval(
            "SELECT coalesce(max(created_at), 0) FROM samples"))


class PostgresStorage:
    """Every storage port over one PostgreSQL database shared by the replicas."""

    def __init__(self, dsn: str, *, dry_run: bool = False,
                 clock: Callable[[], float] = time.time, min_size: int = 2,
                 max_size: int = 10, close_timeout: float = 10.0):
        self.dsn = dsn
        self._min, self._max = min_size, max_size
        self._close_timeout = close_timeout
        self._pool_obj: asyncpg.Pool | None = None
        pool = self.pool
        self.recorder = PostgresRecorder(pool, dry_run=dry_run, clock=clock)
        self.tokens = PostgresTokenCache(pool, clock)
        self.reads = PostgresReadModel(pool)
        self.retention = PostgresRetention(pool)
        self.classifier = PostgresClassifierStore(pool)
        self.windows = PostgresWindows(pool)
        self.actions = PostgresActionQueue(pool)
        self.snapshots = PostgresSnapshots(pool)
        self.leases = PostgresLeases(pool)
        self.console = PostgresConsole(pool)

    def pool(self) -> asyncpg.Pool:
        if self._pool_obj is None:
            raise RuntimeError("storage is not running")
        return self._pool_obj

    async def start(self) -> None:
        """Connect (a pool) and apply migrations; StorageError naming the key if the
        database cannot be reached (the DSN itself is never shown: it may hold a password)."""
        try:
            self._pool_obj = await asyncpg.create_pool(
                self.dsn, min_size=self._min, max_size=self._max, command_timeout=30,
                reset=_keep_session)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BotError(f"storage.dsn: cannot connect to PostgreSQL:"
                               f" {type(exc).__name__}: {_safe(str(exc), self.dsn)}") from None
        async with self._pool_obj.acquire() as conn:
            await migrate(conn)

    async def close(self) -> None:
        """Give back the leases and close the pool. asyncpg's close waits for every
        connection to come back; one still held (a task cut off mid-query) would hang
        shutdown for good, so after ``close_timeout`` seconds the rest are dropped."""
        pool = self._pool_obj
        if pool is None:
            return
        try:
            await asyncio.wait_for(self._close(pool), self._close_timeout)
        except TimeoutError:  # asyncpg terminates the pool when its close is cancelled
            log.warning("PostgreSQL: connections still in use after %.0f s at shutdown;"
                        " closed without waiting for them", self._close_timeout)
        finally:
            pool.terminate()  # a no-op once closed
            self._pool_obj = None

    async def _close(self, pool: asyncpg.Pool) -> None:
        await self.leases.release_all()
        await pool.close()


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool: asyncpg still ends an
    open transaction; session advisory locks are released by whoever took them; no
    setting, cursor or LISTEN is ever left behind. The default reset query would cost
    a round trip per acquire."""


def _safe(message: str, dsn: str) -> str:
    """``message`` without the DSN's password, should the driver have quoted it."""
    from urllib.parse import urlsplit

    password = urlsplit(dsn).password
    return message.replace(password, "***") if password else message
