"""``export`` (run the nightly export now) and ``report`` (rebuild a report from snapshots)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import date
from pathlib import Path

from bot.commands import add_config_option
from bot.config import Config
from bot.core.errors import BotError
from bot.core.paging import end_text
from bot.core.wording import plural
from bot.jobs.export import Progress, build_report, write_report
from bot.jobs.export_files import export_paths
from bot.services import build_services
from bot.storage.ports import Snapshots

API_TIMEOUT_SECONDS = 30.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``export`` and ``report`` commands."""
    p = sub.add_parser(
        "export", help="export the whole blacklist from WeChat now, with its report",
        description="Page through the account's blacklist, store today's snapshot, write "
                    "blacklist-YYYY-MM-DD.csv and report-YYYY-MM-DD.html/.json in export.dir "
                    "and print their paths. Needs WeChat credentials (not in dry-run).")
    add_config_option(p)
    p.set_defaults(handler=run_export)
    p = sub.add_parser(
        "report", help="rebuild a report from stored snapshots (no API call)",
        description="Write report-YYYY-MM-DD.html/.json again from the stored snapshot of "
                    "that day (default: the latest) and print the paths.")
    p.add_argument("--date", type=_day, default=None, metavar="YYYY-MM-DD",
                   help="the snapshot's day (default: the latest export)")
    add_config_option(p)
    p.set_defaults(handler=run_report)


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def run_export(args: argparse.Namespace, config: Config) -> int:
    """Export now; progress on stderr, the three paths on stdout."""
    if config.dry_run:
        raise BotError(f"cannot export: dry-run ({config.dry_run_reason}), so the WeChat API "
                       "is not called. Configure wechat.appid and wechat.secret (or "
                       "WECHAT_APPID/WECHAT_SECRET) and set actions.dry_run to false.")
    paths = asyncio.run(_export(config))
    for path in paths:
        print(path)
    return 0


async def _export(config: Config) -> list[Path]:
    async with build_services(config, api_timeout=API_TIMEOUT_SECONDS) as services:
        result = await services.exporter(on_page=_show_progress).run()
    report = result.report
    print(f"\nexported {plural(result.total, 'OpenID')} in "
          f"{plural(result.progress.pages, 'page')}; paging ended: "
          f"{end_text(result.progress.end)}", file=sys.stderr)
    print(f"change: {report.change_text()}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return [result.paths["csv"], result.paths["html"], result.paths["json"]]


def _show_progress(progress: Progress) -> None:
    of = f" of {progress.total}" if progress.total else ""
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"pages {progress.pages}, OpenIDs {progress.kept}{of}", end=end, file=sys.stderr,
          flush=True)


def run_report(args: argparse.Namespace, config: Config) -> int:
    """Rebuild the HTML/JSON report of a stored snapshot without calling the API."""
    for path in asyncio.run(_report(config, args.date)):
        print(path)
    return 0


SHOWN_DAYS = 10


async def _stored_days(snapshots: Snapshots, latest: str, wanted: str) -> str:
    """The days a report can be rebuilt for: the newest ten, and the nearest before
    ``wanted`` when it is older than those."""
    days = [latest]
    while len(days) < SHOWN_DAYS + 1:
        before = await snapshots.previous(days[-1])
        if before is None:
            break
        days.append(before.day)
    more = len(days) > SHOWN_DAYS
    text = "Stored exports, newest first: " + ", ".join(days[:SHOWN_DAYS])
    if more:
        text += ", ... (older ones too)"
        nearest = await snapshots.previous(wanted)
        if nearest is not None and nearest.day not in days[:SHOWN_DAYS]:
            text += f"; the nearest before {wanted}: {nearest.day}"
    return text + ". Run `python -m bot report --date YYYY-MM-DD` with one of them."


async def _report(config: Config, day: str | None) -> list[Path]:
    async with build_services(config) as services:
        snapshots = services.storage.snapshots
        latest = await snapshots.latest_day()
        if latest is None:
            raise BotError("no export stored yet: run `python -m bot export` first")
        day = day or latest
        if day != latest and await snapshots.get(day) is None:
            stored = await _stored_days(snapshots, latest, day)
            raise BotError(f"no complete snapshot for {day} (no export that day). {stored}")
        data = await build_report(snapshots, day, config.export.timezone,
                                  reconcile=day == latest, queue=services.storage.actions,
                                  now=time.time())
        await write_report(config.export.dir, data)
    paths = export_paths(config.export.dir, day)
    return [paths["html"], paths["json"]]
