"""``blacklist add/remove/status/retry/send/resume/dismiss``: admins' actions, one outbox.

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

from bot.commands import add_config_option
from bot.config import Config
from bot.core.errors import BotError, explain
from bot.core.models import Action, ActionKind, is_valid_openid
from bot.core.timefmt import when, when_long
from bot.core.wording import plural
from bot.rules.schema import MAX_DURATION_DAYS, parse_duration
from bot.services import admin_store, build_services
from bot.storage.owners import make_owner
from bot.storage.ports import QueueStatus

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
    p = group.add_parser("resume", help="lift a sending pause (45009 quota reset by hand)",
                         description="Sending pauses on a quota (45009: until the next "
                                     "Beijing midnight or an hour) or bad credentials. Once "
                                     "you have reset the quota on the platform, or fixed the "
                                     "secret, resume: a running service sends within a few "
                                     "seconds. If the cause remains, the next call pauses "
                                     "again.")
    add_config_option(p)
    p.set_defaults(handler=run_resume)
    p = group.add_parser("dismiss", help="drop failed actions so `retry` stops resending them",
                         description="Mark failed actions dismissed (e.g. 40003: an OpenID "
                                     "that is not a follower of this account). They stay "
                                     "listed, with their error, and `retry` skips them.")
    p.add_argument("targets", nargs="+", metavar="ID|OPENID",
                   help="an action id (#12 or 12, from `blacklist status`) or an OpenID "
                        "(all of that follower's failed actions)")
    add_config_option(p)
    p.set_defaults(handler=run_dismiss)


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
    queued, learnt = admin_store(config).queue_admin_actions(actions, now, dry_run=dry)
    ids = [i for i in queued if i is not None]
    if learnt:
        label = "spam" if args.kind is ActionKind.BLACKLIST else "ham"
        print(f"learnt {learnt} of their texts as {label} (used at the next training: "
              "`python -m bot learn`, or the nightly export)")
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
    ids = admin_store(config).requeue(args.openids, int(time.time()))
    print(f"{plural(len(ids), 'failed action')} queued again")
    if args.queue_only or not ids:
        return 0
    return _send_and_report(config, ids)


def run_send(args: argparse.Namespace, config: Config) -> int:
    """Send everything queued now; print how each ended, exit 1 if any failed or is
    still queued (sending paused, or the send timed out)."""
    _refuse_in_dry_run(config)
    ids = admin_store(config).queued()
    print(f"{plural(len(ids), 'queued action')} to send")
    if not ids:
        return 0
    return _send_and_report(config, ids)


def parse_targets(items: Sequence[str]) -> list[int | str]:
    """``dismiss`` arguments: action ids (``12`` or ``#12``) and OpenIDs; BotError otherwise."""
    targets: list[int | str] = []
    for item in items:
        text = item.strip()
        number = text.removeprefix("#")
        if number.isdigit():
            targets.append(int(number))
        elif is_valid_openid(text):
            targets.append(text)
        else:
            raise BotError(f"{item!r} is neither an action id (as `blacklist status` shows"
                           " it, e.g. #12) nor an OpenID; nothing dismissed")
    return targets


def run_dismiss(args: argparse.Namespace, config: Config) -> int:
    """Failed actions -> dismissed; exit 1 when a target had no failed action."""
    targets = parse_targets(args.targets)
    ids, unknown = admin_store(config).dismiss(targets, int(time.time()))
    print(f"{len(ids)} failed actions dismissed" + (
        f" ({', '.join(f'#{i}' for i in ids)}): `retry` no longer resends them" if ids else ""))
    for target, what in unknown.items():
        shown = f"#{target}" if isinstance(target, int) else target
        print(f"  {shown}: no failed action ({what})")
    return 1 if unknown else 0


def run_resume(args: argparse.Namespace, config: Config) -> int:
    """Lift the sending pause; say what it was and what happens next."""
    store = admin_store(config)
    until, reason = store.resume()
    now = time.time()
    if until <= now:
        print("sending was not paused" + (" (a past pause was cleared)" if until else ""))
        return 0
    print(f"sending resumed (it was paused until {when(until, config.export.timezone)}: "
          f"{reason})")
    pending = dict(store.queue_status(0).counts).get("pending", 0)
    print(f"{pending} actions pending: a running service sends them within a few seconds; "
          "without one, run `blacklist send`. If the cause is still there (quota not reset),"
          " the next call pauses again.")
    return 0


def _refuse_in_dry_run(config: Config) -> None:
    # A dry-run process must not touch a queue that a live service may be working on.
    if config.dry_run:
        raise BotError(f"DRY-RUN ({config.dry_run_reason}): nothing can be sent, so nothing "
                       "was changed; queued actions are left to a service with credentials")


def run_status(args: argparse.Namespace, config: Config) -> int:
    """Print pending, failed (with explanations) and recent actions."""
    status = admin_store(config).queue_status(args.limit)
    for line in status_lines(status, dry_run=config.dry_run, now=time.time(),
                             timezone=config.export.timezone):
        print(line)
    return 0


def status_lines(status: QueueStatus, *, dry_run: bool, now: float,
                 timezone: str = "Asia/Shanghai") -> list[str]:
    """The ``status`` report as lines."""
    lines = ["actions: " + (", ".join(f"{s} {n}" for s, n in status.counts) or "none")]
    if dry_run:
        lines.append("DRY-RUN: actions are recorded, no API call is made")
    if status.paused_until > now:
        lines.append(f"SENDING PAUSED until {when_long(status.paused_until, timezone)}: "
                     f"{status.paused_reason}")
    for title, rows in status.sections:
        lines.append(f"{title} ({len(rows)} shown):")
        for i, openid, kind, state, source, updated, attempts, code, msg in rows:
            line = (f"  #{i} {when(updated, timezone)} {kind:<11} {openid} {state} via {source}"
                    f" attempts {attempts}")
            if code is not None:
                line += f"\n      errcode {code}: {msg or ''}. {explain(code)}".rstrip()
            elif msg:  # no errcode: an HTTP status or a timeout, retried
                line += f"\n      last try: {msg}"
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
    rows = admin_store(config).action_rows(ids)
    for openid, kind, status, code, msg in rows:
        extra = f" errcode {code}: {msg or ''}. {explain(code)}" if code is not None else ""
        print(f"  {kind} {openid}: {status}{extra}".rstrip())
    return rows


async def _drain(config: Config) -> bool:
    async with build_services(config) as services:
        batcher = services.batcher(owner=make_owner("cli"))
        await batcher.start()
        try:
            return await batcher.drain(SEND_TIMEOUT)
        finally:
            await batcher.stop()
