"""What the CLI reads and changes by hand, on PostgreSQL (the twin of
:mod:`bot.storage.sqlite.admin` and the CLI half of :mod:`bot.storage.sqlite.samples`).

Synchronous like the CLI: each call opens one connection, runs in one transaction
on a loop of its own, and closes. The result types are the SQLite module's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias, TypeVar

import asyncpg

from bot.core.errors import BotError
from bot.core.models import Action, ActionKind, Event, Sample
from bot.storage.postgres.actions import read_pause
from bot.storage.postgres.records import enqueue_action
from bot.storage.postgres.storage import MODELS_KEPT
from bot.storage.sqlite.admin import _SECTIONS, FollowerHistory, QueueStatus
from bot.storage.sqlite.records import row_to_event
from bot.storage.sqlite.samples import (
    RECENT_LIMIT,
    RECENT_SECONDS,
    Added,
    Learnt,
    _texts,
    verdict_source,
)

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection


async def add_samples(conn: Conn, samples: Iterable[tuple[str, bool]], *, source: str,
                      now: int, openid: str | None = None) -> Added:
    added = relabelled = unchanged = 0
    for raw, spam in samples:
        text = raw.strip()
        if not text:
            continue
        label = "spam" if spam else "ham"
        old = await conn.fetchval("SELECT label FROM samples WHERE text = $1", text)
        if old is None:
            await conn.execute("INSERT INTO samples (text, label, source, openid, created_at)"
                               " VALUES ($1, $2, $3, $4, $5)", text, label, source, openid, now)
            added += 1
        elif old != label:
            await conn.execute("UPDATE samples SET label = $1, source = $2, openid = $3,"
                               " created_at = $4 WHERE text = $5",
                               label, source, openid, now, text)
            relabelled += 1
        else:
            unchanged += 1
    return Added(added, relabelled, unchanged)


async def _decided_texts(conn: Conn, openid: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT e.texts FROM decisions d JOIN events e ON e.id = d.event_id WHERE"
        " d.openid = $1 AND e.texts IS NOT NULL ORDER BY d.id DESC LIMIT $2",
        openid, RECENT_LIMIT * 4)
    return _texts(tuple(r) for r in rows)[:RECENT_LIMIT]


async def _verdict_texts(conn: Conn, openid: str, *, spam: bool, now: int) -> list[str]:
    if not spam and await conn.fetchval(
            "SELECT 1 FROM decisions WHERE openid = $1 AND action = 'blacklist' LIMIT 1",
            openid) is None:
        return []
    texts = await _decided_texts(conn, openid) if not spam else []
    if texts:
        return texts
    rows = await conn.fetch(
        "SELECT texts FROM events WHERE received_at >= $1 AND openid = $2 AND texts IS NOT"
        " NULL ORDER BY id DESC LIMIT $3", now - RECENT_SECONDS, openid, RECENT_LIMIT * 4)
    return _texts(tuple(r) for r in rows)[:RECENT_LIMIT]


async def _stored_samples(conn: Conn) -> list[Sample]:
    return [Sample(t, label == "spam") for t, label in
            await conn.fetch("SELECT text, label FROM samples ORDER BY id")]


class PostgresAdmin:
    """The CLI's reads and changes on the database at ``dsn``."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        async def go() -> T:
            try:
                conn = await asyncpg.connect(self.dsn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise BotError(f"storage.dsn: cannot connect to PostgreSQL:"
                               f" {type(exc).__name__}") from None
            try:
                if await conn.fetchval("SELECT to_regclass('public.actions')") is None:
                    raise BotError("storage.dsn: the database has no tables yet: start"
                                   " `serve` once (it applies the migrations)")
                async with conn.transaction():
                    return await work(conn)
            except asyncpg.PostgresError as exc:  # a lock timeout, the server shutting down
                raise BotError(f"database error: {type(exc).__name__}: {exc}") from None
            finally:
                await conn.close()

        return asyncio.run(go())

    # ------------------------------------------------------------ blacklist

    def queue_admin_actions(self, actions: Sequence[Action], now: int, *, dry_run: bool
                            ) -> tuple[list[int | None], int]:
        async def work(conn: Conn) -> tuple[list[int | None], int]:
            learnt = 0
            for a in actions:
                spam = a.kind is ActionKind.BLACKLIST
                texts = await _verdict_texts(conn, a.openid, spam=spam, now=now)
                if texts:
                    learnt += (await add_samples(conn, ((t, spam) for t in texts),
                                                 source=verdict_source(spam), now=now,
                                                 openid=a.openid)).stored
            ids = [await enqueue_action(conn, a, now, source="cli", dry_run=dry_run)
                   for a in actions]
            return ids, learnt

        return self._run(work)

    def requeue(self, openids: Sequence[str], now: int) -> list[int]:
        async def work(conn: Conn) -> list[int]:
            rows = await conn.fetch(
                "SELECT a.id, a.openid FROM actions a WHERE a.status = 'failed' AND NOT"
                " EXISTS (SELECT 1 FROM actions b WHERE b.openid = a.openid AND b.id > a.id"
                " AND b.status NOT IN ('failed', 'cancelled')) AND NOT (a.source = 'expiry'"
                " AND EXISTS (SELECT 1 FROM blacklist l WHERE l.openid = a.openid AND"
                " l.status = 'blacklisted' AND (l.expires_at IS NULL OR"
                " l.expires_at > a.created_at))) ORDER BY a.id")
            wanted = set(openids)
            ids = [i for i, o in rows if not wanted or o in wanted]
            await conn.execute(
                "UPDATE actions SET status = 'pending', attempts = 0, not_before = 0,"
                " errcode = NULL, errmsg = NULL, updated_at = $1 WHERE id = ANY($2::bigint[])",
                now, ids)
            return ids

        return self._run(work)

    def queued(self) -> list[int]:
        async def work(conn: Conn) -> list[int]:
            return [r[0] for r in await conn.fetch(
                "SELECT id FROM actions WHERE status IN ('pending', 'sending') ORDER BY id")]

        return self._run(work)

    def action_rows(self, ids: Sequence[int]) -> list[tuple[Any, ...]]:
        async def work(conn: Conn) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.fetch(
                "SELECT openid, kind, status, errcode, errmsg FROM actions"
                " WHERE id = ANY($1::bigint[]) ORDER BY id", list(ids))]

        return self._run(work) if ids else []

    def queue_status(self, limit: int) -> QueueStatus:
        async def work(conn: Conn) -> QueueStatus:
            counts = await conn.fetch("SELECT status, COUNT(*) FROM actions GROUP BY status")
            until, reason = await read_pause(conn)
            status = QueueStatus(sorted((s, int(n)) for s, n in counts), until, reason)
            for title, where in _SECTIONS:
                rows = await conn.fetch(
                    "SELECT id, openid, kind, status, source, updated_at, attempts, errcode,"
                    f" errmsg FROM actions WHERE {where} LIMIT $1", limit)
                status.sections.append((title, [tuple(r) for r in rows]))
            return status

        return self._run(work)

    # ------------------------------------------------------------ why, replay

    def follower_history(self, openid: str, limit: int = 50) -> FollowerHistory:
        async def work(conn: Conn) -> FollowerHistory:
            state = await conn.fetchrow("SELECT status, rule_id, reason, since, expires_at"
                                        " FROM blacklist WHERE openid = $1", openid)
            decisions = await conn.fetch(
                "SELECT d.created_at, d.rule_id, d.action, d.evidence, e.msg_type, e.event"
                " FROM decisions d LEFT JOIN events e ON e.id = d.event_id"
                " WHERE d.openid = $1 ORDER BY d.id DESC LIMIT $2", openid, limit)
            actions = await conn.fetch(
                "SELECT created_at, kind, status, source, rule_id, errcode, errmsg FROM"
                " actions WHERE openid = $1 ORDER BY id DESC LIMIT $2", openid, limit)
            known = await conn.fetchval(
                "SELECT 1 FROM decisions WHERE openid = $1 UNION ALL"
                " SELECT 1 FROM actions WHERE openid = $1 LIMIT 1", openid)
            return FollowerHistory(tuple(state) if state else None,
                                   [tuple(r) for r in decisions], [tuple(r) for r in actions],
                                   known is not None)

        return self._run(work)

    @contextmanager
    def replay_source(self, since: int) -> Iterator[tuple[Iterable[Event], set[str]]]:
        """Stored events received since ``since`` and who was actioned since then."""
        async def work(conn: Conn) -> tuple[list[Event], set[str]]:
            rows = await conn.fetch("SELECT * FROM events WHERE received_at >= $1 ORDER BY id",
                                    since)
            events = [row_to_event(tuple(r.values()), list(r.keys())) for r in rows]
            actioned = {r[0] for r in await conn.fetch(
                "SELECT openid FROM decisions WHERE action = 'blacklist' AND created_at >= $1"
                " UNION SELECT openid FROM actions WHERE kind = 'blacklist' AND"
                " created_at >= $1 AND status != 'cancelled'", since)}
            return events, actioned

        yield self._run(work)

    # ------------------------------------------------------------ learn

    def learn_into(self, samples: Sequence[Sample], *, now: int, stood: int | None = None,
                   forget: str | None = None) -> Learnt:
        async def work(conn: Conn) -> Learnt:
            forgot = None
            if forget is not None:
                tag = (await conn.execute("DELETE FROM samples WHERE openid = $1", forget)
                       if forget else await conn.execute("DELETE FROM samples"))
                forgot = int(tag.rsplit(" ", 1)[-1])
            added = await add_samples(conn, ((s.text, s.spam) for s in samples),
                                      source="learn", now=now)
            history = followers = 0
            if stood is not None:
                for (openid,) in await conn.fetch(
                        "SELECT openid FROM blacklist WHERE status = 'blacklisted' AND"
                        " since <= $1 AND rule_id NOT IN ('', 'cli')", now - stood):
                    texts = await _decided_texts(conn, openid)
                    if texts:
                        history += (await add_samples(conn, ((t, True) for t in texts),
                                                      source="history", now=now,
                                                      openid=openid)).stored
                        followers += 1
            return Learnt(await _stored_samples(conn), added, forgot, history, followers)

        return self._run(work)

    def store_model(self, blob: bytes, *, trained_at: int, samples: int, source: str) -> int:
        async def work(conn: Conn) -> int:
            model_id = int(await conn.fetchval(
                "INSERT INTO models (trained_at, samples, source, blob) VALUES ($1, $2, $3, $4)"
                " RETURNING id", trained_at, samples, source, blob))
            await conn.execute("DELETE FROM models WHERE id <= $1", model_id - MODELS_KEPT)
            return model_id

        return self._run(work)

    def newest_model_blob(self) -> bytes | None:
        async def work(conn: Conn) -> bytes | None:
            blob = await conn.fetchval("SELECT blob FROM models ORDER BY id DESC LIMIT 1")
            return None if blob is None else bytes(blob)

        try:
            return self._run(work)
        except BotError:  # no database yet: no model (as SQLite without its file)
            return None
