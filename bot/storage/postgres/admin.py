"""What the CLI and the console read and change by hand, on PostgreSQL (the twin of
:mod:`bot.storage.sqlite.admin` and the CLI half of :mod:`bot.storage.sqlite.samples`).

Plain async functions on one connection (inside the caller's transaction), shared by
``PostgresAdmin`` (synchronous like the CLI: one connection and one transaction per
call, on a loop of its own) and the console (:mod:`bot.storage.postgres.console`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias, TypeVar

import asyncpg

from bot.core.errors import BotError
from bot.core.models import Action, ActionKind, Event, Sample
from bot.core.windows import standing_warnings
from bot.storage.ports import FollowerHistory, ModLogEntry, QueueStatus
from bot.storage.postgres.actions import PAUSE_KEY, read_pause
from bot.storage.postgres.records import enqueue_action
from bot.storage.postgres.schema import MODELS_KEPT
from bot.storage.sqlite.admin import _SECTIONS
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


# ---------------------------------------------------------------- admins' actions


async def queue_admin_job(conn: Conn, actions: Sequence[Action], now: int, *,
                          dry_run: bool) -> tuple[list[int | None], int]:
    """Queue admins' actions (source ``cli``): the new row ids, and how many samples
    the admin's verdicts taught the classifier (learnt before the actions land)."""
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


async def requeue_failed(conn: Conn, openids: Sequence[str], now: int) -> list[int]:
    """Failed -> pending, except actions a later one supersedes and expiries of a
    blacklist extended since (see the SQLite twin)."""
    rows = await conn.fetch(
        "SELECT a.id, a.openid FROM actions a WHERE a.status = 'failed' AND NOT"
        " EXISTS (SELECT 1 FROM actions b WHERE b.openid = a.openid AND b.id > a.id"
        " AND b.status NOT IN ('failed', 'cancelled', 'dismissed')) AND NOT"
        " (a.source = 'expiry' AND EXISTS (SELECT 1 FROM blacklist l WHERE"
        " l.openid = a.openid AND l.status = 'blacklisted' AND (l.expires_at IS NULL OR"
        " l.expires_at > a.created_at))) ORDER BY a.id")
    wanted = set(openids)
    ids = [i for i, o in rows if not wanted or o in wanted]
    await conn.execute(
        "UPDATE actions SET status = 'pending', attempts = 0, not_before = 0,"
        " errcode = NULL, errmsg = NULL, updated_at = $1 WHERE id = ANY($2::bigint[])",
        now, ids)
    return ids


def _target_column(target: int | str) -> str:
    return "id" if isinstance(target, int) else "openid"


async def dismiss_failed(conn: Conn, targets: Sequence[int | str], now: int
                         ) -> tuple[list[int], dict[int | str, str]]:
    """Failed actions -> ``dismissed`` by id or OpenID (attempts and errcode kept); the
    ids dismissed, and the targets with no failed action (with what they are)."""
    ids: list[int] = []
    unknown: dict[int | str, str] = {}
    for target in targets:
        rows = await conn.fetch(f"SELECT id, status FROM actions WHERE"
                                f" {_target_column(target)} = $1 ORDER BY id", target)
        if not any(status == "failed" for _, status in rows):
            unknown[target] = (", ".join(sorted({status for _, status in rows})) if rows
                               else "no such action")
        ids += [i for i, status in rows if status == "failed" and i not in ids]
    await conn.execute("UPDATE actions SET status = 'dismissed', updated_at = $1"
                       " WHERE id = ANY($2::bigint[])", now, ids)
    return ids, unknown


async def resume_sending(conn: Conn) -> tuple[float, str]:
    """Lift the shared sending pause; the pause lifted, ``(0, "")`` when none."""
    pause = await read_pause(conn)
    await conn.execute("DELETE FROM kv WHERE key = $1", PAUSE_KEY)
    return pause


async def queue_status(conn: Conn, limit: int) -> QueueStatus:
    """Counts, the pause and up to ``limit`` rows of each section."""
    counts = await conn.fetch("SELECT status, COUNT(*) FROM actions GROUP BY status")
    until, reason = await read_pause(conn)
    status = QueueStatus(sorted((s, int(n)) for s, n in counts), until, reason)
    for title, where in _SECTIONS:
        rows = await conn.fetch(
            "SELECT id, openid, kind, status, source, updated_at, attempts, errcode,"
            f" errmsg FROM actions WHERE {where} LIMIT $1", limit)
        status.sections.append((title, [tuple(r) for r in rows]))
    return status


# ---------------------------------------------------------------- a follower's history


async def follower_history(conn: Conn, openid: str, limit: int = 50) -> FollowerHistory:
    """Everything :class:`FollowerHistory` holds for ``openid``."""
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
    queued = await conn.fetch(
        "SELECT id, kind, status, source, rule_id, created_at, attempts, errcode, errmsg"
        " FROM actions WHERE openid = $1 AND status IN ('pending', 'sending') ORDER BY id",
        openid)
    count, first, last = await conn.fetchrow(
        "SELECT COUNT(*), MIN(received_at), MAX(received_at) FROM events WHERE openid = $1",
        openid)
    until, reason = await read_pause(conn)
    return FollowerHistory(tuple(state) if state else None,
                           [tuple(r) for r in decisions], [tuple(r) for r in actions],
                           known is not None, [tuple(r) for r in queued],
                           (int(count), first, last), until, reason)


async def follower_warnings(conn: Conn, openid: str, since: int) -> dict[str, list[int]]:
    """Per rule id, when ``openid`` was warned by it since ``since``, forgetting those
    before that rule's last escalation (see the SQLite twin)."""
    rows = await conn.fetch(
        "SELECT d.rule_id, d.action, COALESCE(e.create_time, d.created_at) FROM decisions d"
        " LEFT JOIN events e ON e.id = d.event_id WHERE d.openid = $1 AND d.created_at >= $2"
        " AND d.action IN ('warn', 'blacklist') ORDER BY d.id", openid, since)
    return standing_warnings(rows)


async def follower_pushes(conn: Conn, openid: str, since: int) -> list[tuple[int, str]]:
    """``(create_time, msg_type)`` of the pushes of ``openid`` received since ``since``."""
    rows = await conn.fetch("SELECT create_time, msg_type FROM events WHERE received_at >= $1"
                            " AND openid = $2 ORDER BY id", since, openid)
    return [(int(t), str(k)) for t, k in rows]


async def replay_rows(conn: Conn, since: int) -> tuple[list[Event], set[str], set[str]]:
    """Stored events received since ``since``, who the rules blacklisted since (decisions
    a push carried) and who admins blacklisted by hand (any source but the rules and
    expiry, however it ended except superseded or dismissed)."""
    rows = await conn.fetch("SELECT * FROM events WHERE received_at >= $1 ORDER BY id", since)
    events = [row_to_event(tuple(r.values()), list(r.keys())) for r in rows]
    by_rules = {r[0] for r in await conn.fetch(
        "SELECT DISTINCT openid FROM decisions WHERE action = 'blacklist' AND"
        " created_at >= $1 AND event_id IS NOT NULL", since)}
    by_hand = {r[0] for r in await conn.fetch(
        "SELECT openid FROM actions WHERE kind = 'blacklist' AND created_at >= $1"
        " AND source NOT IN ('rule', 'expiry') AND status NOT IN ('cancelled', 'dismissed')"
        " UNION SELECT openid FROM decisions WHERE action = 'blacklist' AND created_at >= $1"
        " AND event_id IS NULL", since)}
    return events, by_rules, by_hand


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
        return self._run(lambda conn: queue_admin_job(conn, actions, now, dry_run=dry_run))

    def requeue(self, openids: Sequence[str], now: int) -> list[int]:
        return self._run(lambda conn: requeue_failed(conn, openids, now))

    def dismiss(self, targets: Sequence[int | str], now: int
                ) -> tuple[list[int], dict[int | str, str]]:
        return self._run(lambda conn: dismiss_failed(conn, targets, now))

    def resume(self) -> tuple[float, str]:
        return self._run(resume_sending)

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
        return self._run(lambda conn: queue_status(conn, limit))

    # ------------------------------------------------------------ why, rules test

    def follower_history(self, openid: str, limit: int = 50) -> FollowerHistory:
        return self._run(lambda conn: follower_history(conn, openid, limit))

    def mod_log(self, *, since: int, rule_id: str | None = None, action: str | None = None,
                limit: int = 50) -> list[ModLogEntry]:
        """Decisions created at or after ``since``, newest first (see the SQLite twin)."""
        async def work(conn: Conn) -> list[ModLogEntry]:
            rows = await conn.fetch(
                "SELECT d.created_at, d.openid, d.rule_id, d.action, d.evidence, e.texts"
                " FROM decisions d LEFT JOIN events e ON e.id = d.event_id"
                " WHERE d.created_at >= $1 AND ($2::text IS NULL OR d.rule_id = $2)"
                " AND ($3::text IS NULL OR d.action = $3)"
                " ORDER BY d.created_at DESC, d.id DESC LIMIT $4", since, rule_id, action, limit)
            return [ModLogEntry(*r) for r in rows]

        return self._run(work)

    def follower_warnings(self, openid: str, since: int) -> dict[str, list[int]]:
        return self._run(lambda conn: follower_warnings(conn, openid, since))

    def follower_pushes(self, openid: str, since: int) -> list[tuple[int, str]]:
        return self._run(lambda conn: follower_pushes(conn, openid, since))

    @contextmanager
    def replay_source(self, since: int
                      ) -> Iterator[tuple[Iterable[Event], set[str], set[str]]]:
        """Stored events received since ``since``, who the rules blacklisted since and
        who admins blacklisted by hand."""
        yield self._run(lambda conn: replay_rows(conn, since))

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
