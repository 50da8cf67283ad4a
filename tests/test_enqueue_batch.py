"""A batch's rule actions queued together end exactly as queued one by one would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from bot.core.models import Action, ActionKind
from bot.storage.sqlite.records import enqueue_action, enqueue_actions
from bot.storage.sqlite.schema import open_db

NOW = 1_700_000_000
B, U = ActionKind.BLACKLIST, ActionKind.UNBLACKLIST


def oid(n: int) -> str:
    return f"oBatchFollower{n:014d}"


def prepare(db: Database) -> None:
    """Followers in every state the plan weighs: blacklisted (timed, permanent), removed,
    a pending unblacklist or blacklist, a would-be (dry-run) blacklist, one sent and in
    flight, never seen."""
    db.execute("INSERT INTO blacklist (openid, status, since, expires_at, updated_at) VALUES"
               " (?, 'blacklisted', ?, ?, ?), (?, 'blacklisted', ?, NULL, ?),"
               " (?, 'removed', ?, NULL, ?)",
               [oid(1), NOW - 10, NOW + 100, NOW - 10, oid(2), NOW - 10, NOW - 10,
                oid(3), NOW - 10, NOW - 10])
    for openid, kind, status, attempts in ((oid(4), "unblacklist", "pending", 0),
                                           (oid(5), "blacklist", "pending", 0),
                                           (oid(6), "unblacklist", "sending", 1),
                                           (oid(1), "unblacklist", "pending", 0),
                                           (oid(10), "unblacklist", "pending", 0),
                                           (oid(11), "blacklist", "dry_run", 0)):
        db.execute("INSERT INTO actions (openid, kind, status, attempts, created_at,"
                   " updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [openid, kind, status, attempts, NOW - 5, NOW - 5,
                    NOW + 100 if kind == "blacklist" else None])


ACTIONS = [
    Action(B, oid(1), "r", "again", NOW + 500),   # blacklisted, a pending unblacklist
    Action(B, oid(2), "r", "again", NOW + 500),   # permanently blacklisted: needless
    Action(B, oid(3), "r", "back", None),          # removed: queued
    Action(B, oid(4), "r", "x", NOW + 50),         # cancels the pending unblacklist
    Action(B, oid(5), "r", "x", NOW + 900),        # absorbed, extended
    Action(B, oid(6), "r", "x", None),             # queued behind the one in flight
    Action(B, oid(7), "r", "new", NOW + 60),       # never seen
    Action(U, oid(8), "r", "new", None),           # never seen: needless
    Action(B, oid(9), "r", "twice", NOW + 60),     # twice in the batch: second absorbed
    Action(B, oid(9), "r", "twice", None),
    Action(B, "bad openid!", "r", "x", None),      # malformed: never queued
    Action(U, oid(10), "r", "x", None),            # absorbed, no end to extend
    Action(B, oid(11), "r", "x", NOW + 700),       # dry-run: absorbed by the would-be one
]


def tables(db: Database) -> tuple[list[Any], list[Any]]:
    actions = db.execute("SELECT openid, kind, rule_id, reason, status, attempts,"
                         " expires_at, errmsg, updated_at FROM actions ORDER BY openid, id"
                         ).fetchall()
    blacklist = db.execute("SELECT * FROM blacklist ORDER BY openid").fetchall()
    return actions, blacklist


@pytest.mark.parametrize("dry_run", [False, True], ids=["live", "dry-run"])
def test_batched_enqueue_equals_one_by_one(tmp_path: Path, dry_run: bool) -> None:
    one, batch = open_db(tmp_path / "one.db"), open_db(tmp_path / "batch.db")
    for db in (one, batch):
        prepare(db)
    for action in ACTIONS:
        enqueue_action(one, action, NOW, dry_run=dry_run)
    enqueue_actions(batch, [(action, None, dry_run) for action in ACTIONS], NOW)
    expected = tables(one)
    assert tables(batch) == expected
    queued = {row[0] for row in expected[0] if row[4] in ("pending", "dry_run")}
    assert oid(7) in queued  # the scenario does queue new rows
    one.close()
    batch.close()
