"""WAL checkpoints beside the writer: the WAL is copied back and starts over under load."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.core.models import ActionKind, Decision, Event, RuleHit
from bot.storage.sqlite.checkpoint import Checkpointer
from bot.storage.sqlite.store import Store


def event(number: int) -> Event:
    return Event(openid=f"oCheckpoint{number % 977:017d}", account="gh",
                 create_time=1_700_000_000 + number // 50, msg_type="text",
                 msg_id=str(number), texts={"content": "检查点" * 20})


DECISION = Decision(hits=(RuleHit("spam", ActionKind.LOG, "kw"),))


async def record_many(store: Store, count: int, start: int = 0, concurrency: int = 16
                      ) -> None:
    numbers = iter(range(start, start + count))

    async def worker() -> None:
        for number in numbers:
            await store.record(event(number), DECISION)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def wal_frames(path: Path) -> int:
    """Frames in the WAL now, from a connection that reads it (PASSIVE copies nothing
    the writer still needs and reports the log's length)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][1])
    finally:
        conn.close()


async def test_the_wal_is_checkpointed_beside_the_writer_and_starts_over(tmp_path: Path
                                                                          ) -> None:
    path = tmp_path / "bot.db"
    store = Store(path)
    store.checkpointer = Checkpointer(path, gap=0.005, restart_frames=100)
    await store.start()
    await record_many(store, 4000)
    checkpoints, restarts = store.checkpointer.checkpoints, store.checkpointer.restarts
    await store.close()
    assert checkpoints > 0, "the checkpoint thread never ran"
    assert restarts > 0, "the writer never let the WAL start over"
    # 4000 pushes wrote thousands of pages; had the WAL never started over it would
    # hold them all (SQLite's own checkpoint is off on the writer's connection).
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (4000,)
    conn.close()


async def test_without_the_thread_the_writer_does_not_checkpoint(tmp_path: Path) -> None:
    """The writer's own connection leaves checkpoints to the thread: with the thread
    held back, the WAL keeps every page written (what the thread saves the commits)."""
    path = tmp_path / "bot.db"
    store = Store(path)
    store.checkpointer = Checkpointer(path, gap=3600.0, restart_frames=10**9)
    await store.start()
    await record_many(store, 3000)
    held = wal_frames(path)
    await store.close()
    assert held > 1000, f"the writer checkpointed by itself (WAL has {held} frames)"


async def test_a_reader_pinning_the_wal_holds_up_no_push(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    store = Store(path)
    checkpointer = store.checkpointer = Checkpointer(path, gap=0.005, restart_frames=100)
    await store.start()
    # A second connection holding a read transaction open pins the WAL: checkpoints copy
    # only up to its snapshot and the WAL cannot start over; pushes still commit.
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchall()
    await record_many(store, 1500)
    reader.execute("COMMIT")
    reader.close()
    await record_many(store, 10, start=1500)
    await store.close()
    assert checkpointer.checkpoints > 0
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (1510,)
    conn.close()


async def test_a_checkpoint_thread_that_cannot_open_hands_checkpoints_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bot.db"
    store = Store(path)
    # Its own connection fails to open (a directory where the database should be): the
    # writer must checkpoint by itself again rather than let the WAL grow for ever.
    (tmp_path / "not-a-db").mkdir()
    store.checkpointer = Checkpointer(tmp_path / "not-a-db", gap=0.005)
    await store.start()
    await record_many(store, 3000)
    held = wal_frames(path)
    await store.close()
    assert "WAL checkpoint thread stopped" in caplog.text
    assert held < 1500, f"nobody checkpointed: the WAL holds {held} frames"



def test_a_stop_after_the_last_commit_is_always_seen(tmp_path: Path) -> None:
    """stop() lands at every point of the thread's loop, right after a commit: the
    thread must always see it (a stop's wake-up taken for a commit's hung shutdown)."""
    path = tmp_path / "bot.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    rng = random.Random(7)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads swap often: every point of the loop is hit
    try:
        for _ in range(400):
            checkpointer = Checkpointer(path, gap=0.0005)
            checkpointer.take_over(writer)
            checkpointer.after_batch(writer)
            time.sleep(rng.uniform(0, 0.001))
            stopper = threading.Thread(target=checkpointer.stop, daemon=True)
            stopper.start()
            stopper.join(5)
            assert not stopper.is_alive(), "stop() never returned: the thread missed it"
    finally:
        sys.setswitchinterval(interval)
        writer.close()
