"""The PostgreSQL schema: named migrations, applied once, in order, by whichever
replica starts first (an advisory lock keeps two starting replicas from racing)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

# Advisory lock keys (one 64-bit space per database): one constant per purpose.
MIGRATE_LOCK = 0x626F_7400_0001
EXPORT_LOCK = 0x626F_7400_0002
TOKEN_LOCK = 0x626F_7400_0003
MODELS_KEPT = 5  # classifier models kept (the newest first)

# Each migration is one transaction. Never edit an applied one: add the next.
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_initial", """
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        dedup_key TEXT NOT NULL UNIQUE,
        openid TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        msg_type TEXT NOT NULL,
        event TEXT,
        msg_id TEXT,
        create_time BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        texts TEXT,
        fields TEXT,
        purged BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE TABLE decisions (
        id BIGSERIAL PRIMARY KEY,
        event_id BIGINT REFERENCES events(id),
        openid TEXT NOT NULL,
        rule_id TEXT NOT NULL,
        action TEXT NOT NULL,
        evidence TEXT NOT NULL DEFAULT '',
        field TEXT,
        span_start INTEGER,
        span_end INTEGER,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX decisions_openid ON decisions (openid, created_at);
    CREATE INDEX decisions_created ON decisions (created_at);
    CREATE TABLE actions (
        id BIGSERIAL PRIMARY KEY,
        openid TEXT NOT NULL,
        kind TEXT NOT NULL,
        rule_id TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT 'rule',
        event_id BIGINT REFERENCES events(id),
        status TEXT NOT NULL DEFAULT 'pending',
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_by TEXT,
        claimed_at BIGINT,
        errcode INTEGER,
        errmsg TEXT,
        expires_at BIGINT
    );
    CREATE INDEX actions_status ON actions (status, kind, id);
    CREATE INDEX actions_openid ON actions (openid, status);
    CREATE TABLE blacklist (
        openid TEXT COLLATE "C" PRIMARY KEY,
        status TEXT NOT NULL,
        rule_id TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        since BIGINT NOT NULL,
        expires_at BIGINT,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX blacklist_expiry ON blacklist (status, expires_at);
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE snapshots (
        id BIGSERIAL PRIMARY KEY,
        day TEXT NOT NULL UNIQUE,
        taken_at BIGINT NOT NULL,
        total INTEGER NOT NULL DEFAULT 0,
        complete BOOLEAN NOT NULL DEFAULT FALSE,
        csv_path TEXT,
        report_path TEXT
    );
    CREATE TABLE snapshot_entries (
        snapshot_id BIGINT NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
        openid TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (snapshot_id, openid)
    );
    CREATE TABLE samples (
        id BIGSERIAL PRIMARY KEY,
        text TEXT NOT NULL UNIQUE,
        label TEXT NOT NULL CHECK (label IN ('spam', 'ham')),
        source TEXT NOT NULL DEFAULT '',
        openid TEXT,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX samples_openid ON samples (openid);
    CREATE TABLE models (
        id BIGSERIAL PRIMARY KEY,
        trained_at BIGINT NOT NULL,
        samples INTEGER NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        blob BYTEA NOT NULL
    );
    -- Flood windows and warn ladders shared by every replica: one row per counted push
    -- (dedup_key: a WeChat retry evaluated on a second replica counts once).
    CREATE TABLE window_events (
        openid TEXT NOT NULL,
        key TEXT NOT NULL,
        at BIGINT NOT NULL,
        dedup_key TEXT NOT NULL,
        PRIMARY KEY (key, dedup_key)
    );
    CREATE INDEX window_events_openid ON window_events (openid, at);
    """),
    # One round trip each way for the shared windows: lock and load, then write.
    ("0002_window_functions", """
    CREATE FUNCTION bot_window_load(p_openid TEXT)
    RETURNS TABLE (key TEXT, at BIGINT, dedup_key TEXT) LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_openid, 7));
        RETURN QUERY SELECT w.key, w.at, w.dedup_key FROM window_events w
            WHERE w.openid = p_openid ORDER BY w.at;
    END $$;
    CREATE FUNCTION bot_window_write(p_openid TEXT, p_dedup TEXT, p_reset TEXT[],
                                     p_keys TEXT[], p_ats BIGINT[], p_horizons BIGINT[],
                                     p_keeps INTEGER[])
    RETURNS VOID LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM window_events WHERE key = ANY(p_reset);
        FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
            INSERT INTO window_events (openid, key, at, dedup_key)
                VALUES (p_openid, p_keys[i], p_ats[i], p_dedup) ON CONFLICT DO NOTHING;
            -- forget what is out of every window of the key, and past the newest keep
            DELETE FROM window_events WHERE key = p_keys[i] AND (at <= p_ats[i] - p_horizons[i]
                OR dedup_key NOT IN (SELECT w.dedup_key FROM window_events w
                    WHERE w.key = p_keys[i] ORDER BY w.at DESC LIMIT p_keeps[i]));
        END LOOP;
    END $$;
    """),
]


@contextmanager
def dropped_on_failure(conn: asyncpg.Connection) -> Iterator[None]:
    """Around work that takes and gives back a session advisory lock on ``conn``: if it
    stops part way (an error, a cancellation landing on the unlock), the connection is
    terminated, and the lock goes with it, rather than back to the pool still held
    (the pool's reset is a no-op) where every later taker would wait on it."""
    try:
        yield
    except BaseException:
        conn.terminate()
        raise


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; the names applied now."""
    with dropped_on_failure(conn):
        return await _migrate(conn)


async def _migrate(conn: asyncpg.Connection) -> list[str]:
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations"
                           " (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ DEFAULT now())")
        done = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)
    return applied
