"""The store: migrations, group commit, outbox collapse rules, retention purge."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.models import Action, ActionKind, Decision, Event, RuleHit
from bot.storage.sqlite.records import strings_json
from bot.storage.sqlite.store import Store, enqueue_action, iter_events, open_db, purge_content

OPENID = "oStoreFollower00000000000001"


def text_event(msg_id: int, openid: str = OPENID, content: str = "hi") -> Event:
    return Event(openid=openid, account="gh", create_time=1_700_000_000 + msg_id,
                 msg_type="text", msg_id=str(msg_id), texts={"content": content})


def blacklist(openid: str = OPENID, expires_at: int | None = None) -> Action:
    return Action(ActionKind.BLACKLIST, openid, "spam", "test", expires_at)


def unblacklist(openid: str = OPENID) -> Action:
    return Action(ActionKind.UNBLACKLIST, openid, "manual")


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = open_db(tmp_path / "bot.db")
    yield database
    database.close()


def actions(db) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [tuple(r) for r in db.execute("SELECT kind, status FROM actions ORDER BY id")]


async def test_group_commit_shares_transactions_and_survives_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.db")
    await store.start()
    decision = Decision(hits=(RuleHit("spam", ActionKind.LOG, "kw"),))
    results = await asyncio.gather(*(store.record(text_event(i), decision) for i in range(500)))
    assert all(not r.duplicate for r in results)
    assert store.commits < 500, "concurrent pushes must share commits"
    await store.close()
    conn = sqlite3.connect(tmp_path / "bot.db")
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (500,)
    assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (500,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_the_writer_keeps_temporary_tables_in_memory(tmp_path: Path) -> None:
    # On disk (SQLite's default) every group commit made, wrote and unlinked a file in
    # /var/tmp for the RETURNING insert's statement journal: 4 syscalls and a write each.
    store = Store(tmp_path / "bot.db")
    await store.start()
    try:
        assert await store.call(lambda db: db.execute("PRAGMA temp_store").fetchone()) == (2,)
    finally:
        await store.close()


async def test_a_failing_call_does_not_sink_the_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.db")
    await store.start()

    def broken(db):  # type: ignore[no-untyped-def]
        db.execute("INSERT INTO kv (key, value, updated_at) VALUES ('a', 'b', 1)")
        raise ValueError("boom")

    good = store.record(text_event(1), Decision())
    bad = store.call(broken)
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], ValueError)
    assert await store.call(lambda db: db.execute("SELECT count(*) FROM kv").fetchone()[0]) == 0
    await store.close()


async def test_a_failing_push_batch_fails_its_callers_and_the_writer_lives(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.db")
    await store.start()
    bad = Decision(hits=(RuleHit("spam", ActionKind.BLACKLIST, "kw"),),
                   actions=(Action("ban", OPENID, "spam"),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ban"):
        await store.record(text_event(1), bad)
    assert not (await store.record(text_event(2), Decision())).duplicate
    assert await store.call(lambda db: db.execute("SELECT count(*) FROM events").fetchone()[0]) \
        == 1, "the failed batch was rolled back whole, the next one committed"
    await store.close()


def add_failure_trigger(path: Path, msg_id: str, body: str) -> None:
    """Make SQLite itself fail the insert of one push (no code of ours is replaced)."""
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TRIGGER inject BEFORE INSERT ON events WHEN NEW.msg_id = '{msg_id}'"
                 f" BEGIN {body}; END")
    conn.commit()
    conn.close()


async def test_one_bad_push_does_not_fail_the_pushes_sharing_its_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.db")
    await store.start()
    add_failure_trigger(tmp_path / "bot.db", "666", "SELECT RAISE(ABORT, 'injected')")
    results = await asyncio.gather(  # queued in one loop turn: one transaction
        store.record(text_event(1), Decision()), store.record(text_event(666), Decision()),
        store.record(text_event(2), Decision()), return_exceptions=True)
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert await store.call(lambda db: [r[0] for r in db.execute(
        "SELECT msg_id FROM events ORDER BY id")]) == ["1", "2"]
    await store.close()


async def test_a_broken_database_fails_the_batch_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.db")
    await store.start()
    # 'no such table' is an OperationalError, like a locked or full database
    add_failure_trigger(tmp_path / "bot.db", "666", "SELECT * FROM no_such_table")
    commits = store.commits
    results = await asyncio.gather(
        store.record(text_event(1), Decision()), store.record(text_event(666), Decision()),
        return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert store.commits == commits, "not retried call by call"
    await store.close()


async def test_a_store_can_be_started_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "bot.db")
    await store.start()
    await store.close()
    with pytest.raises(RuntimeError, match="not running"):
        await store.record(text_event(1), Decision())
    await store.start()
    assert not (await store.record(text_event(1), Decision())).duplicate
    await store.close()


def test_duplicate_pending_actions_collapse(db) -> None:  # type: ignore[no-untyped-def]
    assert enqueue_action(db, blacklist(), 1) is not None
    assert enqueue_action(db, blacklist(), 2) is None
    assert actions(db) == [("blacklist", "pending")]


def test_unblacklist_cancels_pending_blacklist(db) -> None:  # type: ignore[no-untyped-def]
    enqueue_action(db, blacklist(), 1)
    assert enqueue_action(db, unblacklist(), 2) is None, "nothing was ever sent: nothing to undo"
    assert actions(db) == [("blacklist", "cancelled")]


def test_already_blacklisted_is_not_sent_again(db) -> None:  # type: ignore[no-untyped-def]
    db.execute("INSERT INTO blacklist (openid, status, since, updated_at)"
               " VALUES (?, 'blacklisted', 1, 1)", [OPENID])
    assert enqueue_action(db, blacklist(expires_at=99), 2) is None
    assert actions(db) == []
    assert db.execute("SELECT expires_at FROM blacklist").fetchone() == (None,), \
        "a permanent blacklist must not become a timed one"
    assert enqueue_action(db, unblacklist(), 3) is not None
    assert actions(db) == [("unblacklist", "pending")]


def test_timed_blacklists_keep_the_later_end(db) -> None:  # type: ignore[no-untyped-def]
    enqueue_action(db, blacklist(expires_at=500), 1)
    enqueue_action(db, blacklist(expires_at=300), 2)
    assert db.execute("SELECT expires_at FROM actions").fetchall() == [(500,)]
    enqueue_action(db, blacklist(expires_at=900), 3)
    assert db.execute("SELECT expires_at FROM actions").fetchall() == [(900,)]
    enqueue_action(db, blacklist(), 4)  # permanent: nothing to extend, stays timed
    db.execute("UPDATE actions SET expires_at = NULL")
    enqueue_action(db, blacklist(expires_at=1000), 5)
    assert db.execute("SELECT expires_at FROM actions").fetchall() == [(None,)]


def test_dry_run_actions_are_recorded_never_pending(db) -> None:  # type: ignore[no-untyped-def]
    assert enqueue_action(db, blacklist(), 1, dry_run=True) is not None
    assert enqueue_action(db, blacklist(), 2, dry_run=True) is None
    assert actions(db) == [("blacklist", "dry_run")]
    enqueue_action(db, blacklist("oOtherFollower0000000000001"), 3)
    assert actions(db) == [("blacklist", "dry_run"), ("blacklist", "pending")]


def test_purge_works_in_bounded_chunks(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.store import insert_event

    for index in range(7):
        insert_event(db, text_event(index), Decision(), now=100)
    assert [purge_content(db, before=150, limit=3) for _ in range(4)] == [3, 3, 1, 0]


def drain(db, now: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Send everything queued, in the order the batcher may, all successfully."""
    from bot.storage.sqlite.actions import claim, complete

    sent: list[str] = []
    while True:
        got = [row for kind in ("blacklist", "unblacklist")
               for row in claim(db, kind, "test-owner", now, 20)]
        if not got:
            return sent
        complete(db, got, now)
        sent += [row.kind for row in got]


def follower_state(db) -> tuple[str, int | None]:  # type: ignore[no-untyped-def]
    return tuple(db.execute("SELECT status, expires_at FROM blacklist WHERE openid = ?",
                            [OPENID]).fetchone())


def test_a_permanent_blacklist_outranks_a_timed_one_queued_or_applied(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import queue_expired

    enqueue_action(db, blacklist(expires_at=5000), 100)
    enqueue_action(db, blacklist(expires_at=None), 101)  # absorbed: makes the queued one permanent
    drain(db, 110)
    assert follower_state(db) == ("blacklisted", None)
    enqueue_action(db, unblacklist(), 120, source="cli")
    drain(db, 125)
    enqueue_action(db, blacklist(expires_at=5000), 130)
    drain(db, 140)
    assert follower_state(db) == ("blacklisted", 5000)
    assert enqueue_action(db, blacklist(expires_at=None), 150) is None  # already blacklisted
    assert follower_state(db) == ("blacklisted", None)
    assert queue_expired(db, 6000) == 0


def test_the_last_decision_wins_after_a_failed_send(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import claim, release

    enqueue_action(db, blacklist(), 100)
    sending = claim(db, "blacklist", "test-owner", 100, 20)
    enqueue_action(db, unblacklist(), 101)  # queued behind the call in flight
    release(db, [r.id for r in sending], 102, not_before=0)  # the call failed (-1)
    enqueue_action(db, blacklist(), 103)  # the last word
    assert drain(db, 110)[-1] == "blacklist"
    assert follower_state(db)[0] == "blacklisted"


def test_an_action_that_may_have_reached_wechat_is_never_cancelled(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import claim, release

    enqueue_action(db, blacklist(), 100)
    sending = claim(db, "blacklist", "test-owner", 100, 20)
    release(db, [r.id for r in sending], 101, not_before=0)  # timed out: applied or not?
    enqueue_action(db, unblacklist(), 102)
    assert actions(db) == [("blacklist", "pending"), ("unblacklist", "pending")]
    assert drain(db, 110) == ["blacklist", "unblacklist"]
    assert follower_state(db)[0] == "removed"


def test_an_expiry_does_not_cancel_a_newer_queued_blacklist(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import queue_expired

    enqueue_action(db, blacklist(expires_at=3600), 100)
    drain(db, 100)
    enqueue_action(db, blacklist(expires_at=7 * 86400), 160, source="cli")  # an extension
    assert queue_expired(db, 3600) == 0
    assert actions(db) == [("blacklist", "done"), ("blacklist", "pending")]
    drain(db, 3700)
    assert follower_state(db) == ("blacklisted", 7 * 86400)


def test_a_blacklist_queued_behind_one_in_flight_keeps_the_stronger_end(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import claim, complete

    for first, second, kept in ((None, 5000, None), (9000, 5000, 9000), (5000, 9000, 9000)):
        db.execute("DELETE FROM actions")
        db.execute("DELETE FROM blacklist")
        enqueue_action(db, blacklist(expires_at=first), 100)
        in_flight = claim(db, "blacklist", "test-owner", 100, 20)
        enqueue_action(db, blacklist(expires_at=second), 101)  # queued behind it
        complete(db, in_flight, 102)
        drain(db, 103)
        assert follower_state(db) == ("blacklisted", kept), (first, second)


def test_a_late_completion_leaves_a_row_settled_since_alone(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import claim, complete, finish, reclaim_stale

    enqueue_action(db, blacklist(), 100)
    # sent by a process whose completion then waits on a locked database, heartbeat silent
    stuck = claim(db, "blacklist", "elsewhere:1:stuck", 100, 20)
    assert reclaim_stale(db, 200, stale_after=60) == 1  # another process takes it over
    drain(db, 200)
    enqueue_action(db, unblacklist(), 201, source="cli")
    drain(db, 202)
    assert follower_state(db)[0] == "removed"
    complete(db, stuck, 300)  # the first process's write finally goes through
    finish(db, [r.id for r in stuck], 300, "failed", errcode=48001)
    assert follower_state(db)[0] == "removed"
    assert actions(db) == [("blacklist", "done"), ("unblacklist", "done")]


def test_reoffending_after_an_expiry_gets_the_new_end_not_permanent(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import queue_expired

    enqueue_action(db, blacklist(expires_at=3600), 100)
    drain(db, 100)
    assert queue_expired(db, 3600) == 1  # unblacklist queued, not sent yet (paused, say)
    enqueue_action(db, blacklist(expires_at=9000), 3700)  # offends again meanwhile
    assert actions(db)[-1] == ("unblacklist", "cancelled")
    assert follower_state(db) == ("blacklisted", 9000)
    assert queue_expired(db, 9000) == 1


def test_after_an_expiry_a_new_blacklist_brings_its_own_end(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import claim, finish, queue_expired

    # an admin's timed blacklist while the expiry's unblacklist waits (sending paused)
    enqueue_action(db, blacklist(expires_at=3600), 100)
    drain(db, 100)
    assert queue_expired(db, 3600) == 1
    enqueue_action(db, blacklist(expires_at=9000), 3700, source="cli")
    drain(db, 3700)
    assert follower_state(db) == ("blacklisted", 9000)
    # the expiry's unblacklist in flight, a rule re-blacklists, the unblacklist fails
    assert queue_expired(db, 9000) == 1
    in_flight = claim(db, "unblacklist", "test-owner", 9000, 20)
    enqueue_action(db, blacklist(expires_at=20000), 9001)
    finish(db, [r.id for r in in_flight], 9002, "failed", errcode=48001)
    drain(db, 9003)
    assert follower_state(db) == ("blacklisted", 20000)
    assert queue_expired(db, 20000) == 1  # and it expires again, once
    assert queue_expired(db, 20001) == 0


@pytest.mark.parametrize("new_end", [None, 50_000], ids=["permanent", "extended"])
def test_retry_skips_the_expiry_of_a_blacklist_extended_since(db, new_end: int | None  # type: ignore[no-untyped-def]
                                                              ) -> None:
    from bot.storage.sqlite.actions import claim, finish, queue_expired
    from bot.storage.sqlite.admin import requeue_failed

    enqueue_action(db, blacklist(expires_at=3600), 100)
    drain(db, 100)
    assert queue_expired(db, 3600) == 1
    failed = claim(db, "unblacklist", "test-owner", 3600, 20)
    finish(db, [r.id for r in failed], 3601, "failed", errcode=40003)
    assert queue_expired(db, 3700) == 0  # recorded once, failed: not re-queued each tick
    enqueue_action(db, blacklist(expires_at=new_end), 4000)  # offends again: extended
    assert requeue_failed(db, [], 5000) == []  # `blacklist retry` leaves that expiry alone
    drain(db, 5000)
    assert follower_state(db) == ("blacklisted", new_end)


def test_remove_then_add_for_shortens_a_permanent_blacklist(db) -> None:  # type: ignore[no-untyped-def]
    enqueue_action(db, blacklist(), 100)
    drain(db, 100)
    enqueue_action(db, unblacklist(), 200, source="cli")  # not sent yet (paused, say)
    enqueue_action(db, blacklist(expires_at=5000), 300, source="cli")
    drain(db, 300)
    assert follower_state(db) == ("blacklisted", 5000)


def test_purge_leaves_an_admins_own_quotes_and_ends(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.actions import claim, complete

    for index in range(3):
        enqueue_action(db, Action(ActionKind.BLACKLIST, f"oAdminQuoted{index:016d}", "cli",
                                  'fraud ring: "lucky88"'), 100, source="cli")
    complete(db, claim(db, "blacklist", "test-owner", 100, 20), 100)
    assert purge_content(db, before=150, limit=2) == 2  # the actions' reasons (no span)
    assert purge_content(db, before=150, limit=2) == 1
    assert purge_content(db, before=150, limit=2) == 0  # blacklist reasons: nothing to redact
    assert db.execute("SELECT DISTINCT reason FROM blacklist").fetchall() == [
        ('fraud ring: "lucky88"',)]


def test_purge_is_not_held_up_by_a_row_from_a_wrong_clock(db) -> None:  # type: ignore[no-untyped-def]
    import time

    from bot.storage.sqlite.store import insert_event

    insert_event(db, text_event(1), Decision(), now=100)
    insert_event(db, text_event(2), Decision(), now=int(time.time()) + 10 * 86400)
    insert_event(db, text_event(3), Decision(), now=100)
    purge_content(db, before=150)
    assert [r[0] for r in db.execute("SELECT purged FROM events ORDER BY id")] == [1, 1, 1]


def test_admin_remove_is_always_sent(db) -> None:  # type: ignore[no-untyped-def]
    enqueue_action(db, blacklist(), 1)
    assert enqueue_action(db, unblacklist(), 2, source="cli") is not None
    assert actions(db) == [("blacklist", "cancelled"), ("unblacklist", "pending")]


def test_invalid_openid_is_never_queued(db) -> None:  # type: ignore[no-untyped-def]
    assert enqueue_action(db, blacklist("bad id; drop"), 1) is None
    assert actions(db) == []


def test_purge_drops_content_keeps_metadata(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.store import insert_event

    insert_event(db, text_event(1, content="secret phone 13800000000"), Decision(), now=100)
    insert_event(db, text_event(2), Decision(), now=200)
    assert purge_content(db, before=150) == 1
    assert purge_content(db, before=150) == 0
    rows = db.execute("SELECT msg_id, texts, purged FROM events ORDER BY id").fetchall()
    assert rows == [("1", None, 1), ("2", '{"content": "hi"}', 0)]
    replayed = [event.texts for _, event in iter_events(db)]
    assert replayed == [{}, {"content": "hi"}]


PURGE_RULES = """
rules:
  - id: contact-spam
    keywords: [加微信]
    action: blacklist
"""


def test_purge_drops_quoted_words_from_evidence_and_reasons(db, tmp_path: Path  # type: ignore[no-untyped-def]
                                                            ) -> None:
    from bot.rules import RuleEngine, load_ruleset
    from bot.storage.sqlite.actions import claim, complete
    from bot.storage.sqlite.store import insert_event

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(PURGE_RULES, encoding="utf-8")
    engine = RuleEngine(load_ruleset(tmp_path / "rules"))
    words = '我住"幸福路"5号; 加 微 信 abc'  # quotes and a separator: the quoting must hold
    old, new = text_event(1, content=words), text_event(2, content=words)
    insert_event(db, old, engine.evaluate(old), now=100)
    complete(db, claim(db, "blacklist", "test-owner", 110, 20), 110)
    insert_event(db, new, engine.evaluate(new), now=200)

    def quoting(sql: str) -> list[bool]:
        return ["加 微 信" in row[0] for row in db.execute(sql)]

    assert quoting("SELECT evidence FROM decisions ORDER BY id") == [True, True]
    assert purge_content(db, before=150) == 4  # event, decision, action, blacklist row
    assert quoting("SELECT evidence FROM decisions ORDER BY id") == [False, True]
    assert quoting("SELECT reason FROM actions ORDER BY id") == [False]
    assert quoting("SELECT reason FROM blacklist") == [False]
    evidence, rule_id, span = db.execute(
        "SELECT evidence, rule_id, span_start FROM decisions ORDER BY id").fetchone()
    assert (rule_id, span) == ("contact-spam", 11)
    assert evidence.endswith(": [purged]") and "幸福路" not in evidence
    assert purge_content(db, before=150) == 0


def test_cli_transaction_waits_for_the_service_lock(tmp_path: Path) -> None:
    import threading

    from bot.storage.sqlite.store import run_sync

    path = tmp_path / "bot.db"
    open_db(path).close()
    locked = threading.Event()

    def service_commit() -> None:  # another writer holding the lock for a moment
        conn = sqlite3.connect(path)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO kv (key, value, updated_at) VALUES ('k', 'v', 1)")
        locked.set()
        threading.Event().wait(0.3)
        conn.execute("COMMIT")
        conn.close()

    writer = threading.Thread(target=service_commit)
    writer.start()
    locked.wait()
    try:
        row_id = run_sync(path, lambda db: enqueue_action(db, blacklist(), 1, source="cli"))
    finally:
        writer.join()
    assert row_id is not None


def test_bulk_record_maps_each_decision_to_its_event(db) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.sqlite.store import Push, event_row, record_pushes

    hit = RuleHit("spam", ActionKind.BLACKLIST, "kw")
    pushes = []
    for index in range(1, 8):
        event = text_event(index, openid=f"oBulkFollower{index:014d}", content=f"m{index}")
        decision = Decision(hits=(hit,), actions=(blacklist(event.openid),)) \
            if index % 3 == 0 else Decision()
        pushes.append(Push(event_row(event, 100), event.openid, decision))
    pushes.append(pushes[2])  # a retry inside the same batch
    results = record_pushes(db, pushes, 100)
    assert [r.duplicate for r in results] == [False] * 7 + [True]
    rows = db.execute("SELECT e.id, e.texts, d.openid FROM decisions d"
                      " JOIN events e ON e.id = d.event_id ORDER BY e.id").fetchall()
    assert [(texts, openid) for _, texts, openid in rows] == [
        ('{"content": "m3"}', "oBulkFollower00000000000003"),
        ('{"content": "m6"}', "oBulkFollower00000000000006")]
    assert results[2].event_id == rows[0][0] and results[5].event_id == rows[1][0]
    assert db.execute("SELECT openid, event_id FROM actions ORDER BY id").fetchall() == [
        ("oBulkFollower00000000000003", rows[0][0]), ("oBulkFollower00000000000006", rows[1][0])]
    assert record_pushes(db, pushes[:1], 101)[0].duplicate, "a later retry is caught too"


def test_bulk_record_ids_are_the_stored_rows_with_retries_among_new_pushes(  # type: ignore[no-untyped-def]
        db) -> None:
    """Each push's event id is its own row's, whether the batch is all new (ids follow
    from the last rowid) or holds retries of stored pushes between new ones (read back)."""
    from bot.storage.sqlite.store import Push, event_row, record_pushes

    def push(index: int) -> Push:
        event = text_event(index, openid=f"oMixFollower{index:015d}", content=f"t{index}")
        return Push(event_row(event, 100), event.openid, Decision())

    def stored_ids() -> dict[str, int]:
        return {texts: row_id for row_id, texts in db.execute("SELECT id, texts FROM events")}

    first = record_pushes(db, [push(i) for i in range(1, 6)], 100)
    ids = stored_ids()
    assert [r.event_id for r in first] == [ids[f'{{"content": "t{i}"}}'] for i in range(1, 6)]
    batch = [push(6), push(2), push(7), push(4), push(8)]
    second = record_pushes(db, batch, 101)
    ids = stored_ids()
    assert [r.duplicate for r in second] == [False, True, False, True, False]
    assert [r.event_id for r in second] == [
        ids['{"content": "t6"}'], None, ids['{"content": "t7"}'], None, ids['{"content": "t8"}']]
    assert len(ids) == 8


@given(st.dictionaries(st.text(), st.text()))
def test_an_events_texts_are_stored_as_json_dumps_writes_them(texts: dict[str, str]) -> None:
    assert strings_json(texts) == json.dumps(texts, ensure_ascii=False)


def test_texts_that_are_not_all_strings_are_still_stored_as_json() -> None:
    assert strings_json({"content": "hi", "n": 1}) == '{"content": "hi", "n": 1}'
