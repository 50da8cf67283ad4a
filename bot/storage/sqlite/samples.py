"""The classifier's tables: stored training samples and trained models."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from bot.core.models import Sample
from bot.storage.sqlite.schema import open_db
from bot.storage.sqlite.store import run_sync

# A follower's recent texts, for learning from an admin's correction: how far back and
# how many (the texts that led to the decision are the ones that matter).
RECENT_SECONDS = 7 * 86400
RECENT_LIMIT = 20
MODELS_KEPT = 5


@dataclass(frozen=True)
class Added:
    """What storing a batch of samples did."""

    added: int = 0
    relabelled: int = 0
    unchanged: int = 0

    @property
    def stored(self) -> int:
        """Samples that are new or changed."""
        return self.added + self.relabelled


def add_samples(db: Database, samples: Iterable[tuple[str, bool]], *, source: str,
                now: int, openid: str | None = None) -> Added:
    """Store labelled texts (call inside a transaction); a known text takes the new label."""
    added = relabelled = unchanged = 0
    for raw, spam in samples:
        text = raw.strip()  # the model reads them alike: store them once
        if not text:
            continue
        label = "spam" if spam else "ham"
        row = db.execute("SELECT label FROM samples WHERE text = ?", [text]).fetchone()
        if row is None:
            db.execute("INSERT INTO samples (text, label, source, openid, created_at)"
                       " VALUES (?, ?, ?, ?, ?)", [text, label, source, openid, now])
            added += 1
        elif row[0] != label:
            db.execute("UPDATE samples SET label = ?, source = ?, openid = ?, created_at = ?"
                       " WHERE text = ?", [label, source, openid, now, text])
            relabelled += 1
        else:
            unchanged += 1
    return Added(added, relabelled, unchanged)


def stored_samples(db: Database) -> list[Sample]:
    """Every stored sample, oldest first."""
    return [Sample(text, label == "spam") for text, label in
            db.execute("SELECT text, label FROM samples ORDER BY id")]


def newest_sample_at(db: Database) -> int:
    """When the newest sample was stored (0 when none is)."""
    return int(db.execute("SELECT coalesce(max(created_at), 0) FROM samples").fetchone()[0])


def _forget(db: Database, openid: str | None) -> int:
    """Delete the samples taken from one follower, or every sample (``None``)."""
    if openid is None:
        return db.execute("DELETE FROM samples").rowcount
    return db.execute("DELETE FROM samples WHERE openid = ?", [openid]).rowcount


def save_model(db: Database, blob: bytes, *, trained_at: int, samples: int,
               source: str) -> int:
    """Store a trained model; the newest is the one in force. Old ones are pruned."""
    cursor = db.execute("INSERT INTO models (trained_at, samples, source, blob)"
                        " VALUES (?, ?, ?, ?)", [trained_at, samples, source, blob])
    model_id = int(cursor.lastrowid or 0)
    db.execute("DELETE FROM models WHERE id <= ?", [model_id - MODELS_KEPT])
    return model_id


def latest_model_id(db: Database) -> int:
    """The id of the model in force (0 when none was trained)."""
    return int(db.execute("SELECT coalesce(max(id), 0) FROM models").fetchone()[0])


def model_ids(db: Database) -> list[int]:
    """The stored models, newest first."""
    return [row[0] for row in db.execute("SELECT id FROM models ORDER BY id DESC")]


def load_model_blob(db: Database, model_id: int) -> bytes | None:
    row = db.execute("SELECT blob FROM models WHERE id = ?", [model_id]).fetchone()
    return None if row is None else bytes(row[0])


def recent_texts(db: Database, openid: str, now: int) -> list[str]:
    """The follower's recent message texts, newest first (what an admin's verdict on the
    follower says something about)."""
    rows = db.execute(
        "SELECT texts FROM events WHERE received_at >= ? AND openid = ? AND texts IS NOT NULL"
        " ORDER BY id DESC LIMIT ?", [now - RECENT_SECONDS, openid, RECENT_LIMIT * 4])
    return _texts(rows)[:RECENT_LIMIT]


def texts_of_standing_blacklists(db: Database, stood_seconds: int, now: int
                                 ) -> Iterator[tuple[str, list[str]]]:
    """Followers a rule blacklisted at least ``stood_seconds`` ago and still blacklisted,
    with the texts that led to it (the events behind their decisions)."""
    followers = db.execute(
        "SELECT openid FROM blacklist WHERE status = 'blacklisted' AND since <= ?"
        " AND rule_id NOT IN ('', 'cli')", [now - stood_seconds]).fetchall()
    for (openid,) in followers:
        texts = decided_texts(db, openid)
        if texts:
            yield openid, texts


def _texts(rows: Iterable[tuple[str]]) -> list[str]:
    out: list[str] = []
    for (raw,) in rows:
        try:
            fields = json.loads(raw)
        except ValueError:
            continue
        text = fields.get("content") if isinstance(fields, dict) else None
        if isinstance(text, str) and text.strip() and text not in out:
            out.append(text)
    return out


def rule_blacklisted(db: Database, openid: str) -> bool:
    """Whether a rule (not an admin) decided to blacklist this follower."""
    return db.execute("SELECT 1 FROM decisions WHERE openid = ? AND action = 'blacklist'"
                      " LIMIT 1", [openid]).fetchone() is not None


def decided_texts(db: Database, openid: str) -> list[str]:
    """The texts of the follower's pushes that rules decided on, newest first."""
    rows = db.execute(
        "SELECT e.texts FROM decisions d JOIN events e ON e.id = d.event_id"
        " WHERE d.openid = ? AND e.texts IS NOT NULL ORDER BY d.id DESC LIMIT ?",
        [openid, RECENT_LIMIT * 4])
    return _texts(rows)[:RECENT_LIMIT]


def verdict_texts(db: Database, openid: str, *, spam: bool, now: int) -> list[str]:
    """What an admin's verdict on a follower teaches: their texts, to label ``spam``.

    Removing a follower a rule blacklisted marks what the rules decided on as ham (a
    false positive corrected); adding one marks their recent texts as spam. Only reads:
    call it before the write transaction (under WAL it blocks no writer), since the
    recent texts are found by scanning a week of events.
    """
    if not spam and not rule_blacklisted(db, openid):
        return []
    texts = decided_texts(db, openid) if not spam else []
    return texts or recent_texts(db, openid, now)


def verdict_source(spam: bool) -> str:
    return "blacklist add" if spam else "blacklist remove"


def read_samples(path: str | Path) -> list[Sample]:
    """Every stored sample, read on a connection of its own (off the writer thread)."""
    db = open_db(path, migrate=False)
    try:
        return stored_samples(db)
    finally:
        db.close()


# ---------------------------------------------------------------- the CLI's calls


@dataclass(frozen=True)
class Learnt:
    """What ``learn`` changed, and every sample now stored."""

    stored: list[Sample]
    added: Added = Added()
    forgot: int | None = None
    history: int = 0
    followers: int = 0


def learn_into(path: str | Path, samples: Sequence[Sample], *, now: int,
               stood: int | None = None, forget: str | None = None) -> Learnt:
    """In one transaction: forget one follower's samples (``forget`` an OpenID, or ``""``
    for all), store ``samples``, and with ``stood`` learn as spam the texts of followers
    whose rule blacklist has stood that long. Returns what is stored after."""

    def change(db: Database) -> Learnt:
        forgot = None if forget is None else _forget(db, forget or None)
        added = add_samples(db, ((s.text, s.spam) for s in samples), source="learn",
                            now=now)
        history = followers = 0
        if stood is not None:
            for openid, texts in texts_of_standing_blacklists(db, stood, now):
                history += add_samples(db, ((t, True) for t in texts), source="history",
                                       now=now, openid=openid).stored
                followers += 1
        return Learnt(stored_samples(db), added, forgot, history, followers)

    return run_sync(path, change)


def store_model(path: str | Path, blob: bytes, *, trained_at: int, samples: int,
                source: str) -> int:
    """Store a trained model in the database at ``path``: the one in force."""
    return run_sync(path, lambda db: save_model(db, blob, trained_at=trained_at,
                                                samples=samples, source=source))


def newest_model_blob(path: str | Path) -> bytes | None:
    """The model in force at ``path``; None when there is no database or no model."""
    if not Path(path).is_file():
        return None
    db = open_db(path)
    try:
        model_id = latest_model_id(db)
        return load_model_blob(db, model_id) if model_id else None
    finally:
        db.close()
