"""WAL checkpoints on a thread of their own, so that no push waits behind one.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1000
pages: that one commit copies every page to the database file and fsyncs it
(measured on the bench's pushes, store alone: 6-8 ms every ~23 group commits, against 0.5 ms for
the others), and every push queued behind it waits as long. That wait was the p99.

Here the writer's connection never checkpoints by itself. :class:`Checkpointer`
copies the WAL into the database from its own connection with passive checkpoints,
which run beside the writer (WAL lets one checkpointer and one writer work at once).
A passive checkpoint cannot start the WAL over while the writer keeps appending, so
once the WAL is long the writer is asked to finish the job itself, between two
transactions: only the few frames written during the last checkpoint remain, and
its next transaction then writes from the start of the WAL again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# Seconds at least between two passive checkpoints while commits come in (none when
# idle): each copies what the commits since the last one wrote.
CHECKPOINT_GAP = 0.05
# WAL frames (pages) past which the writer is asked to let the WAL start over.
RESTART_FRAMES = 4000
# Bytes the WAL file is cut back to when it starts over (a burst may have grown it).
WAL_SIZE_LIMIT = 16 * 1024 * 1024
SQLITE_AUTOCHECKPOINT = 1000  # SQLite's default, back in force if the thread stops


class Checkpointer:
    """Runs passive checkpoints of one database file until stopped.

    The writer calls :meth:`take_over` on its connection once and :meth:`after_batch`
    after each transaction.
    """

    def __init__(self, path: Path, *, gap: float = CHECKPOINT_GAP,
                 restart_frames: int = RESTART_FRAMES, busy_timeout: float = 10.0):
        self.path = path
        self.gap = gap
        self.restart_frames = restart_frames
        self.busy_timeout = busy_timeout
        self.checkpoints = 0
        self.restarts = 0
        self._lock = threading.Lock()  # one checkpoint at a time (SQLite allows one)
        self._stop = threading.Event()
        self._written = threading.Event()  # set by each commit, cleared by a checkpoint
        self._restart_due = False
        self.gave_up = False  # the thread stopped: the writer must checkpoint again
        self._failed = ""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (take_over does, on the writer's connection)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="store-checkpoint",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (the last connection's close checkpoints what is left)."""
        self._stop.set()
        self._written.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._give_up(exc)
            return
        try:
            # The loop tests _stop itself: stop() also sets _written to wake the wait,
            # and a clear() right after the gap would otherwise swallow that wake-up.
            while not self._stop.is_set():
                self._written.wait()
                if self._stop.wait(self.gap):
                    return
                self._written.clear()
                frames = self._checkpoint(conn)
                if frames is not None and frames >= self.restart_frames:
                    self._restart_due = True
        except Exception as exc:  # never leave the WAL to grow with nobody copying it
            self._give_up(exc)
        finally:
            conn.close()

    def _give_up(self, exc: Exception) -> None:
        log.error("WAL checkpoint thread stopped (%s: %s); the writer checkpoints by "
                  "itself again", exc.__class__.__name__, exc)
        self.gave_up = True

    def _checkpoint(self, conn: sqlite3.Connection) -> int | None:
        """One passive checkpoint; the WAL's length in frames, None when it failed."""
        with self._lock:
            try:
                # fetchall: a statement left unfinished would keep a read snapshot open,
                # and with it the WAL from ever starting over
                _busy, frames, _copied = conn.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            except sqlite3.Error as exc:  # a full disk: the WAL grows, pushes still commit
                self._note_failure(exc)
                return None
        self.checkpoints += 1
        if self._failed:
            log.info("WAL checkpoints work again")
            self._failed = ""
        return int(frames)

    def _note_failure(self, exc: sqlite3.Error) -> None:
        reason = f"{exc.__class__.__name__}: {exc}"
        if reason != self._failed:  # once per distinct reason, not five times a second
            log.warning("WAL checkpoint failed (%s); retrying", reason)
        self._failed = reason

    def take_over(self, conn: sqlite3.Connection) -> None:
        """The writer's connection, before it serves: checkpoints are this thread's."""
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self.start()

    def after_batch(self, conn: sqlite3.Connection) -> None:
        """The writer's connection, between two transactions: note the commit, finish a
        checkpoint when the WAL should start over, and give SQLite its own checkpoints
        back if this thread has stopped."""
        self._written.set()
        if self._restart_due:
            self._finish(conn)
        if self.gave_up:  # SQLite's own checkpoints again, inside COMMITs
            conn.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT}")
            self.gave_up = False

    def _finish(self, conn: sqlite3.Connection) -> None:
        """Copy the frames the last checkpoint left, so that the next transaction starts
        the WAL over."""
        if not self._lock.acquire(blocking=False):
            return  # a checkpoint is running: ask again after the next batch
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._restart_due = False
            self.restarts += 1
        except sqlite3.Error as exc:
            self._note_failure(exc)
        finally:
            self._lock.release()
