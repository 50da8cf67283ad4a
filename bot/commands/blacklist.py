"""``blacklist add/remove/status/retry/send``: admins' actions through the same outbox.

Adds and removes are queued in the outbox (source ``cli``) and then sent by this process
through the same Batcher the service runs. When a service shares the database, both
claim rows atomically, so an action is sent by exactly one of them; the command reports
whatever is settled when it finishes (an action the service claimed shows as sending).

In dry-run (``actions.dry_run``, or no appid/secret in this process's configuration)
adds and removes are only recorded as ``dry_run`` rows and no Batcher runs: the queue
may belong to a live service that has the secrets this process lacks. ``send`` and
``retry`` refuse (exit 1) and change nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from sqlite_utils import Database

from bot.cli import add_config_option
from bot.commands import existing_db, when
from bot.config import Config
from bot.core.errors import BotError
from bot.core.models import Action, ActionKind, is_valid_openid
from bot.jobs.batcher import Batcher
from bot.metrics import Metrics
from bot.rules.schema import MAX_DURATION_DAYS, parse_duration
from bot.storage.sqlite.actions import make_owner, read_pause
from bot.storage.sqlite.store import Store, enqueue_action, open_db, run_sync
from bot.wechat.api import SqliteTokenCache, WeChatClient, explain

SEND_TIMEOUT = 120.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``blacklist`` command group."""
    parser = sub.add_parser("blacklist", help="blacklist or unblacklist followers by hand",
                            description="Queue blacklist actions and send them now.")
    group = parser.add_subparsers(dest="blacklist_command", metavar="ACTION", required=True)
    for name, kind, text in [("add", ActionKind.BLACKLIST, "blacklist followers"),
                             ("remove", ActionKind.UNBLACKLIST, "remove followers from it")]:
        p = group.add_parser(name, help=text, description=f"{text.capitalize()} (queued, "
                             "then sent in batches of up to 20). In dry-run they are only "
                             "recorded as dry_run and nothing is sent.")
        p.add_argument("openids", nargs="*", metavar="OPENID", help="followers' OpenIDs")
        p.add_argument("--file", help="a file with one OpenID a line (# comments allowed)")
        p.add_argument("--reason", default="", help="why, recorded with the action")
        p.add_argument("--queue-only", action="store_true",
                       help="only queue; leave sending to the running service")
        if kind is ActionKind.BLACKLIST:
            p.add_argument("--for", dest="duration", metavar="DURATION",
                           help="timed blacklist, e.g. 30m, 12h, 7d (as a rule's duration:):"
                                " removed when it ends")
        add_config_option(p)
        p.set_defaults(handler=run_change, kind=kind)
    p = group.add_parser("status", help="show queued, failed and recent actions",
                         description="Pending and failed actions (with errcodes explained) "
                                     "and the most recent settled ones.")
    p.add_argument("--limit", type=int, default=20, help="rows per section (20)")
    add_config_option(p)
    p.set_defaults(handler=run_status)
    p = group.add_parser("retry", help="queue failed actions again, then send them",
                         description="Failed actions (not superseded by a later one for the "
                                     "same follower) go back to pending and are sent. In "
                                     "dry-run nothing can be sent: exits 1, changes nothing.")
    p.add_argument("openids", nargs="*", metavar="OPENID", help="only these followers")
    p.add_argument("--queue-only", action="store_true", help="only queue them again")
    add_config_option(p)
    p.set_defaults(handler=run_retry)
    p = group.add_parser("send", help="send everything queued now (no service running)",
                         description="Send every queued action, partial batches included, "
                                     "and print how each ended: exits 1 if any failed "
                                     "or is still queued. "
                                     "In dry-run nothing can be sent: exits 1.")
    add_config_option(p)
    p.set_defaults(handler=run_send)


# ---------------------------------------------------------------- pure helpers


def duration_seconds(text: str) -> int:
    """``--for`` in seconds: exactly what a rule's ``duration:`` accepts; BotError otherwise."""
    seconds = parse_duration(text)
    if seconds is None:
        raise BotError(f"--for {text!r}: expected a positive number and a unit s/m/h/d, "
                       f"e.g. 7d, at most {MAX_DURATION_DAYS}d")
    return seconds


def collect_openids(args: Sequence[str], file: str | None) -> list[str]:
    """OpenIDs from the arguments and the file, deduplicated in order; all must be valid."""
    items = list(args)
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise BotError(f"--file {file}: not UTF-8 text (byte {exc.start}); save it as "
                           "UTF-8, one OpenID a line") from None
        except OSError as exc:
            raise BotError(f"--file {file}: {exc.strerror}") from None
        items += [ln.split("#", 1)[0].strip() for ln in lines]
    openids = list(dict.fromkeys(o for o in items if o))
    bad = [o for o in openids if not is_valid_openid(o)]
    if bad:
        shown = ", ".join(repr(o) for o in bad[:10])
        raise BotError(f"{len(bad)} invalid OpenID(s), nothing queued: {shown}")
    if not openids:
        raise BotError("no OpenID given (arguments or --file)")
    return openids


# ---------------------------------------------------------------- commands


def run_change(args: argparse.Namespace, config: Config) -> int:
    """Queue adds/removes, then send them unless --queue-only; print what happened.

    In dry-run they are recorded as ``dry_run`` rows and nothing else happens.
    """
    openids = collect_openids(args.openids, args.file)
    now = int(time.time())
    duration = getattr(args, "duration", None)
    expires = now + duration_seconds(duration) if duration else None
    actions = [Action(args.kind, o, "cli", args.reason, expires) for o in openids]
    dry = config.dry_run

    def queue(db: Database) -> list[int | None]:
        return [enqueue_action(db, a, now, source="cli", dry_run=dry) for a in actions]

    queued = run_sync(config.storage.path, queue)
    ids = [i for i in queued if i is not None]
    if dry:
        print(f"DRY-RUN ({config.dry_run_reason}): nothing is sent to WeChat. {args.kind}: "
              f"{len(ids)} recorded as dry_run, {len(openids) - len(ids)} already recorded")
        _print_rows(config, ids)
        return 0
    print(f"{args.kind}: {len(ids)} queued, {len(openids) - len(ids)} already in that state "
          "or merged with a queued action")
    if args.queue_only or not ids:
        return 0
    return _send_and_report(config, ids)


def run_retry(args: argparse.Namespace, config: Config) -> int:
    """Failed actions back to pending (unless superseded), then send them."""
    _refuse_in_dry_run(config)
    path = existing_db(config.storage.path, "no action was ever queued")
    now = int(time.time())
    ids = run_sync(path, lambda db: requeue_failed(db, args.openids, now))
    print(f"{len(ids)} failed actions queued again")
    if args.queue_only or not ids:
        return 0
    return _send_and_report(config, ids)


def run_send(args: argparse.Namespace, config: Config) -> int:
    """Send everything queued now; print how each ended, exit 1 if any failed or is
    still queued (sending paused, or the send timed out)."""
    _refuse_in_dry_run(config)
    ids = run_sync(existing_db(config.storage.path, "no action was ever queued"), queued_ids)
    print(f"{len(ids)} queued actions to send")
    if not ids:
        return 0
    return _send_and_report(config, ids)


def queued_ids(db: Database) -> list[int]:
    """Actions waiting to be sent (or claimed by a sender, perhaps a dead one)."""
    rows = db.execute("SELECT id FROM actions WHERE status IN ('pending', 'sending')"
                      " ORDER BY id").fetchall()
    return [row[0] for row in rows]


def _refuse_in_dry_run(config: Config) -> None:
    # A dry-run process must not touch a queue that a live service may be working on.
    if config.dry_run:
        raise BotError(f"DRY-RUN ({config.dry_run_reason}): nothing can be sent, so nothing "
                       "was changed; queued actions are left to a service with credentials")


def requeue_failed(db: Database, openids: Sequence[str], now: int) -> list[int]:
    """Failed -> pending, except actions a later one for the same follower supersedes,
    and expiries of a blacklist extended since (its end now later, or permanent)."""
    rows = db.execute(
        "SELECT a.id, a.openid FROM actions a WHERE a.status = 'failed' AND NOT EXISTS ("
        " SELECT 1 FROM actions b WHERE b.openid = a.openid AND b.id > a.id"
        " AND b.status NOT IN ('failed', 'cancelled')) AND NOT (a.source = 'expiry' AND"
        " EXISTS (SELECT 1 FROM blacklist l WHERE l.openid = a.openid AND l.status ="
        " 'blacklisted' AND (l.expires_at IS NULL OR l.expires_at > a.created_at)))"
        " ORDER BY a.id").fetchall()
    wanted = set(openids)
    ids = [i for i, o in rows if not wanted or o in wanted]
    for i in ids:
        db.execute("UPDATE actions SET status = 'pending', attempts = 0, not_before = 0,"
                   " errcode = NULL, errmsg = NULL, updated_at = ? WHERE id = ?", [now, i])
    return ids


def run_status(args: argparse.Namespace, config: Config) -> int:
    """Print pending, failed (with explanations) and recent actions."""
    db = open_db(existing_db(config.storage.path, "no action was ever queued"))
    try:
        for line in status_lines(db, args.limit, dry_run=config.dry_run,
                                 timezone=config.export.timezone):
            print(line)
    finally:
        db.close()
    return 0


def status_lines(db: Database, limit: int, *, dry_run: bool,
                 timezone: str = "Asia/Shanghai") -> list[str]:
    """The ``status`` report as lines."""
    counts = db.execute("SELECT status, COUNT(*) FROM actions GROUP BY status").fetchall()
    lines = ["actions: " + (", ".join(f"{s} {n}" for s, n in sorted(counts)) or "none")]
    if dry_run:
        lines.append("DRY-RUN: actions are recorded, no API call is made")
    until, reason = read_pause(db)
    if until > time.time():
        lines.append(f"SENDING PAUSED until {when(until, timezone)}: {reason}")
    sections = [("pending", "status IN ('pending', 'sending') ORDER BY id"),
                ("failed", "status = 'failed' ORDER BY id DESC"),
                ("recent", "status IN ('done', 'dry_run', 'skipped') ORDER BY updated_at DESC,"
                           " id DESC")]
    for title, where in sections:
        rows = db.execute("SELECT id, openid, kind, status, source, updated_at, attempts,"
                          f" errcode, errmsg FROM actions WHERE {where} LIMIT ?",
                          [limit]).fetchall()
        lines.append(f"{title} ({len(rows)} shown):")
        for i, openid, kind, status, source, updated, attempts, code, msg in rows:
            line = (f"  #{i} {when(updated, timezone)} {kind:<11} {openid} {status} via {source}"
                    f" attempts {attempts}")
            if code is not None:
                line += f"\n      errcode {code}: {msg or ''}. {explain(code)}".rstrip()
            lines.append(line)
    return lines


# ---------------------------------------------------------------- sending


def _send_and_report(config: Config, ids: list[int]) -> int:
    """Send through a Batcher in this process; exit 1 if any of ``ids`` failed or is still
    pending (paused, timed out). Rows a running service has claimed will be sent by it."""
    drained = asyncio.run(_drain(config))
    rows = _print_rows(config, ids)
    if not drained:
        print("not everything was sent (paused, or claimed by a running service): "
              "see `blacklist status`")
    return 1 if any(r[2] in ("failed", "pending") for r in rows) else 0


def _print_rows(config: Config, ids: list[int]) -> list[tuple[Any, ...]]:
    """Print the rows ``ids`` with their status; return them."""
    rows: list[tuple[Any, ...]] = []
    if not ids:
        return rows
    db = open_db(config.storage.path)
    try:
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = ids[start:start + 500]
            rows += db.execute(f"SELECT openid, kind, status, errcode, errmsg FROM actions"
                               f" WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id",
                               chunk).fetchall()
    finally:
        db.close()
    for openid, kind, status, code, msg in rows:
        extra = f" errcode {code}: {msg or ''}. {explain(code)}" if code is not None else ""
        print(f"  {kind} {openid}: {status}{extra}".rstrip())
    return rows


async def _drain(config: Config) -> bool:
    store = Store(config.storage.path)
    await store.start()
    metrics = Metrics()
    try:
        async with aiohttp.ClientSession() as session:
            client = WeChatClient(config.wechat, session, SqliteTokenCache(store), metrics)
            batcher = Batcher(store, client, config.actions, metrics, dry_run=False,
                              owner=make_owner("cli"))
            await batcher.start()
            try:
                return await batcher.drain(SEND_TIMEOUT)
            finally:
                await batcher.stop()
    finally:
        await store.close()
