"""Events, decisions and outbox actions on PostgreSQL; shared by every replica.

A WeChat retry that lands on another replica meets the same ``events.dedup_key``
UNIQUE constraint: ``INSERT ... ON CONFLICT DO NOTHING`` waits for the first
delivery's transaction and then reports a duplicate (or, if the first replica died
before COMMIT, records it). Queueing an action reads the follower's rows and asks
:mod:`bot.core.outbox`, under a per-follower transaction advisory lock, so two
replicas deciding about one follower at once queue one action, not two.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from bot.core.models import (
    MESSAGE_TYPES,
    Action,
    ActionKind,
    Decision,
    Event,
    Recorded,
    is_valid_openid,
)
from bot.core.outbox import Queued, active_statuses, against_state, plan_enqueue, queued_status
from bot.storage.sqlite.records import redact_quotes, strings_json

log = logging.getLogger(__name__)

_INSERT_EVENT = (
    "INSERT INTO events (dedup_key, openid, account, msg_type, event, msg_id, create_time,"
    " received_at, texts, fields) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    " ON CONFLICT (dedup_key) DO NOTHING RETURNING id")
_INSERT_DECISIONS = (
    "INSERT INTO decisions (event_id, openid, rule_id, action, evidence, field, span_start,"
    " span_end, created_at) SELECT $1, $2, u.*, $9::bigint FROM unnest($3::text[], $4::text[],"
    " $5::text[], $6::text[], $7::int[], $8::int[]) AS u")


def follower_lock_sql(param: str = "$1") -> str:
    """Serialises every read-decide-write about one follower across replicas."""
    return f"SELECT pg_advisory_xact_lock(hashtextextended({param}, 7))"


def _event_args(event: Event, now: int) -> list[Any]:
    fields = None if event.msg_type in MESSAGE_TYPES else strings_json(event.fields)
    return [event.dedup_key, event.openid, event.account, event.msg_type, event.event,
            event.msg_id, event.create_time, now, strings_json(event.texts), fields]


async def insert_decisions(conn: asyncpg.Connection, event_id: int | None, openid: str,
                           decision: Decision, now: int) -> None:
    hits = decision.hits
    await conn.execute(
        _INSERT_DECISIONS, event_id, openid, [h.rule_id for h in hits],
        [str(h.action) for h in hits], [h.evidence for h in hits], [h.field for h in hits],
        [h.span[0] if h.span else None for h in hits],
        [h.span[1] if h.span else None for h in hits], now)


async def record(pool: asyncpg.Pool, event: Event, decision: Decision, now: int, *,
                 dry_run: bool) -> Recorded:
    """Commit one push with its decision and actions; a retry comes back duplicate."""
    args = _event_args(event, now)
    async with pool.acquire() as conn:
        if not decision.hits:  # the common case: one statement, committed on its own
            event_id = await conn.fetchval(_INSERT_EVENT, *args)
            return Recorded(event_id, event_id is None)
        async with conn.transaction():
            event_id = await conn.fetchval(_INSERT_EVENT, *args)
            if event_id is None:
                return Recorded(None, True)
            await insert_decisions(conn, event_id, event.openid, decision, now)
            for action in decision.actions:
                await enqueue_action(conn, action, now, event_id=event_id, dry_run=dry_run)
        return Recorded(event_id, False)


async def enqueue_action(conn: asyncpg.Connection, action: Action, now: int, *,
                         event_id: int | None = None, source: str = "rule",
                         dry_run: bool = False) -> int | None:
    """Queue one API action as :func:`bot.core.outbox.plan_enqueue` decides (inside the
    caller's transaction); the new row id, or None when nothing needed queueing."""
    kind = ActionKind(action.kind)
    if not is_valid_openid(action.openid):
        log.warning("not queueing %s for malformed OpenID %r", kind, action.openid[:64])
        return None
    await conn.execute(follower_lock_sql(), action.openid)
    queued = [Queued(*row) for row in await conn.fetch(
        "SELECT id, kind, status, attempts, expires_at FROM actions WHERE openid = $1"
        " AND status = ANY($2::text[]) ORDER BY id", action.openid,
        list(active_statuses(dry_run)))]
    plan = plan_enqueue(kind, action.expires_at, queued, dry_run=dry_run, source=source)
    for cancelled in plan.cancel:
        await conn.execute("UPDATE actions SET status = 'cancelled', updated_at = $1,"
                           " errmsg = $2 WHERE id = $3", now, f"superseded by {kind}", cancelled)
    if plan.reset_end:
        await conn.execute("UPDATE blacklist SET expires_at = $1, updated_at = $2"
                           " WHERE openid = $3 AND status = 'blacklisted'",
                           action.expires_at, now, action.openid)
    if plan.absorb_into is not None:
        if plan.extend:
            await conn.execute("UPDATE actions SET expires_at = $1, updated_at = $2"
                               " WHERE id = $3", plan.absorbed_end, now, plan.absorb_into)
        return None
    if plan.check_state:
        row = await conn.fetchrow("SELECT status, expires_at FROM blacklist WHERE openid = $1",
                                  action.openid)
        check = against_state(tuple(row) if row else None, kind, action.expires_at,
                              cancelled_one=bool(plan.cancel))
        if check.set_end:
            await conn.execute("UPDATE blacklist SET expires_at = $1, updated_at = $2"
                               " WHERE openid = $3", check.end, now, action.openid)
        if check.needless:
            return None
    row_id: int = await conn.fetchval(
        "INSERT INTO actions (openid, kind, rule_id, reason, source, event_id, status,"
        " created_at, updated_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$8,$9)"
        " RETURNING id", action.openid, str(kind), action.rule_id, action.reason, source,
        event_id, queued_status(dry_run), now, action.expires_at)
    return row_id


async def pending_count(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Outbox actions waiting to be sent (pending or being sent)."""
    return int(await conn.fetchval(
        "SELECT COUNT(*) FROM actions WHERE status IN ('pending', 'sending')"))


async def purge_content(pool: asyncpg.Pool, before: int, limit: int, now: float) -> int:
    """Drop followers' words from what is older than ``before`` (see the SQLite twin:
    :func:`bot.storage.sqlite.records.purge_content`); at most ``limit`` rows a table."""
    future = int(now) + 86400  # a row stamped over a day ahead: a wrong clock; purge it
    changed = 0
    async with pool.acquire() as conn, conn.transaction():
        changed += _count(await conn.execute(
            "UPDATE events SET texts = NULL, fields = NULL, purged = TRUE WHERE id IN"
            " (SELECT id FROM events WHERE NOT purged AND (received_at < $1 OR"
            " received_at > $2) ORDER BY id LIMIT $3)", before, future, limit))
        for table, column in (("decisions", "evidence"), ("actions", "reason")):
            rows = await conn.fetch(
                f"SELECT id, {column} FROM {table} WHERE (created_at < $1 OR created_at > $2)"
                f" AND {column} LIKE '%at %: \"%' ORDER BY id LIMIT $3", before, future, limit)
            redacted = [(redact_quotes(text), row_id) for row_id, text in rows
                        if redact_quotes(text) != text]
            await conn.executemany(f"UPDATE {table} SET {column} = $1 WHERE id = $2",
                                   redacted)
            changed += len(redacted)
        rows = await conn.fetch("SELECT openid, reason FROM blacklist WHERE since < $1"
                                " AND reason LIKE '%at %: \"%'", before)
        redacted = [(new, openid) for openid, reason in rows
                    if (new := redact_quotes(reason)) != reason]
        await conn.executemany("UPDATE blacklist SET reason = $1 WHERE openid = $2", redacted)
        # Flood and warn counts of followers silent since then (a window row is only
        # trimmed when its follower writes again); not counted: the caller loops on rows.
        await conn.execute("DELETE FROM window_events WHERE ctid = ANY(ARRAY(SELECT ctid"
                           " FROM window_events WHERE at < $1 LIMIT $2))", before, limit)
    return changed + len(redacted)


def _count(status: str) -> int:
    """Rows changed, from asyncpg's command tag (``UPDATE 12``)."""
    return int(status.rsplit(" ", 1)[-1])
