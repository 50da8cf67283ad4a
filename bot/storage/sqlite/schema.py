"""The SQLite schema (sqlite-utils migrations) and opening the database file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

core = Migrations("bot-core")


@core(name="0001_initial")
def _initial(db: Database) -> None:
    db.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            dedup_key TEXT NOT NULL UNIQUE,
            openid TEXT NOT NULL,
            account TEXT NOT NULL DEFAULT '',
            msg_type TEXT NOT NULL,
            event TEXT,
            msg_id TEXT,
            create_time INTEGER NOT NULL,
            received_at INTEGER NOT NULL,
            texts TEXT,
            fields TEXT,
            purged INTEGER NOT NULL DEFAULT 0
        )"""
    )
    # No index on openid: every insert pays for each index, and per-follower questions
    # ("why") are answered from decisions and actions, which are indexed by openid.
    db.execute("CREATE INDEX events_received ON events (received_at)")
    db.execute(
        """CREATE TABLE decisions (
            id INTEGER PRIMARY KEY,
            event_id INTEGER REFERENCES events(id),
            openid TEXT NOT NULL,
            rule_id TEXT NOT NULL,
            action TEXT NOT NULL,
            evidence TEXT NOT NULL DEFAULT '',
            field TEXT,
            span_start INTEGER,
            span_end INTEGER,
            created_at INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX decisions_openid ON decisions (openid, created_at)")
    db.execute("CREATE INDEX decisions_created ON decisions (created_at)")
    # The outbox: one row per decided API action. status: pending -> sending -> done |
    # failed; cancelled (superseded), skipped (already in that state), dry_run.
    db.execute(
        """CREATE TABLE actions (
            id INTEGER PRIMARY KEY,
            openid TEXT NOT NULL,
            kind TEXT NOT NULL,
            rule_id TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT 'rule',
            event_id INTEGER REFERENCES events(id),
            status TEXT NOT NULL DEFAULT 'pending',
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            not_before INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            claimed_by TEXT,
            claimed_at INTEGER,
            errcode INTEGER,
            errmsg TEXT,
            expires_at INTEGER
        )"""
    )
    db.execute("CREATE INDEX actions_status ON actions (status, kind, id)")
    db.execute("CREATE INDEX actions_openid ON actions (openid, status)")
    # Our view of who is blacklisted through us (and when a timed blacklist ends).
    db.execute(
        """CREATE TABLE blacklist (
            openid TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            rule_id TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '',
            since INTEGER NOT NULL,
            expires_at INTEGER,
            updated_at INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX blacklist_expiry ON blacklist (status, expires_at)")
    db.execute(
        """CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        )"""
    )


@core(name="0002_snapshots")
def _snapshots(db: Database) -> None:
    # One snapshot per export day (a second export that day replaces it).
    db.execute(
        """CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            day TEXT NOT NULL UNIQUE,
            taken_at INTEGER NOT NULL,
            total INTEGER NOT NULL DEFAULT 0,
            complete INTEGER NOT NULL DEFAULT 0,
            csv_path TEXT,
            report_path TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE snapshot_entries (
            snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
            openid TEXT NOT NULL,
            PRIMARY KEY (snapshot_id, openid)
        ) WITHOUT ROWID"""
    )


@core(name="0003_samples_models")
def _samples_models(db: Database) -> None:
    # The classifier's training set, one row per distinct text: the latest label given
    # to a text wins. openid: the follower it was learnt from (learn --forget).
    db.execute(
        """CREATE TABLE samples (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL UNIQUE,
            label TEXT NOT NULL CHECK (label IN ('spam', 'ham')),
            source TEXT NOT NULL DEFAULT '',
            openid TEXT,
            created_at INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX samples_openid ON samples (openid)")
    # Trained models; the newest is the one in force.
    db.execute(
        """CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            trained_at INTEGER NOT NULL,
            samples INTEGER NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            blob BLOB NOT NULL
        )"""
    )


# Schema changes go here as new named migrations (never edit an applied one).
MIGRATION_SETS: list[Migrations] = [core]



def open_db(path: str | Path, *, migrate: bool = True, synchronous: str = "full",
            busy_timeout: float = 10.0) -> Database:
    """Open (creating if needed) the SQLite file in WAL mode and apply migrations.

    The connection belongs to the calling thread; the CLI uses this directly and
    :class:`Store` calls it on its own thread. ``busy_timeout`` is how long a statement
    waits for another process's lock before failing with "database is locked".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None)
    db = Database(conn)
    # WAL: readers (the CLI) never block the writer. FULL (default): each COMMIT fsyncs
    # the WAL, so an answered push survives a power cut too; group commit (Store) spreads
    # that one fsync over every push that arrived meanwhile. NORMAL skips it: still safe
    # against a process crash (kill -9), not against the machine losing power.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'normal' else 'FULL'}")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    db.execute("PRAGMA foreign_keys=ON")
    # Statement journals and RETURNING's result tables in memory: on disk (the default)
    # every group commit created, wrote and unlinked a file in /var/tmp.
    db.execute("PRAGMA temp_store=MEMORY")
    if migrate:
        for migrations in MIGRATION_SETS:
            migrations.apply(db)
    return db
