"""Export output: atomic files, the streamed CSV, retention of old files, the chat summary."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from bot.core.netpolicy import is_ip_literal, is_public, url_problem
from bot.storage.ports import Snapshots

log = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK = 10_000  # rows per database call: the writer thread is never held for long
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


async def write_atomic(path: Path, chunks: AsyncIterator[str]) -> None:
    """Write ``chunks`` to a temp file beside ``path``, fsync, then rename over it.

    A crash or error at any point leaves either the old file or the new one under
    ``path``, never a half one; the temp file is removed on error.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
    try:
        async for text in chunks:
            await asyncio.to_thread(handle.write, text)
        await asyncio.to_thread(_flush_and_close, handle)
        await asyncio.to_thread(os.replace, tmp, path)
        await asyncio.to_thread(_fsync_dir, path.parent)
    except BaseException:
        handle.close()
        Path(tmp).unlink(missing_ok=True)
        raise


def _flush_and_close(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def one_chunk(text: str) -> AsyncIterator[str]:
    """``text`` as a single-chunk stream for :func:`write_atomic`."""
    yield text


async def csv_chunks(snapshots: Snapshots, snapshot_id: int) -> AsyncIterator[str]:
    """The CSV text of a snapshot, streamed from storage in OpenID order."""
    yield "openid\n"
    after = ""
    while True:
        rows = await snapshots.entries_chunk(snapshot_id, after, CHUNK)
        if not rows:
            return
        yield "".join(o + "\n" for o in rows)
        after = rows[-1]


def export_paths(directory: str | Path, day: str) -> dict[str, Path]:
    """Where the day's CSV, HTML report and JSON summary go (inside ``directory``).

    ``day`` must be a calendar date written YYYY-MM-DD: it becomes part of file names,
    so anything else (``../x``, a path, 2026-02-30) is refused with ValueError.
    """
    try:
        valid = bool(_ISO_DAY.fullmatch(day)) and date.fromisoformat(day).isoformat() == day
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"not a date (YYYY-MM-DD): {day!r}")
    base = Path(directory)
    return {"csv": base / f"blacklist-{day}.csv", "html": base / f"report-{day}.html",
            "json": base / f"report-{day}.json"}


def remove_old_files(directory: Path, cutoff: str) -> list[Path]:
    """Delete ``blacklist-``/``report-`` files of days before ``cutoff``; return them."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        for prefix in ("blacklist-", "report-"):
            day = path.name.removeprefix(prefix)[:10]
            if path.name.startswith(prefix) and DAY_RE.match(day) and day < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class PublicOnlyResolver(ThreadedResolver):
    """Resolves as usual, then refuses a host with any non-public address.

    The check is on the addresses the connection will use, at connect time: a name
    that resolved to a public address when the config was loaded and to 127.0.0.1 or
    169.254.169.254 now (DNS rebinding) is refused all the same.
    """

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        private = sorted({r["host"] for r in results if not is_public(r["host"])})
        if private:
            raise OSError(f"{host} resolves to a non-public address ({', '.join(private)}); "
                          "set export.notify_allow_private to allow it")
        return results


async def notify(url: str, text: str, *, timeout: float = 10.0, allow_private: bool = False,
                 ssl_context: ssl.SSLContext | None = None) -> bool:
    """POST ``text`` to a WeCom group robot; a failure is logged, never raised.

    https only; redirects are not followed (a 3xx is a failure); unless
    ``allow_private``, every address the host resolves to must be public. The robot
    URL carries its key, so only its host is ever logged.
    """
    host = urlsplit(url).hostname or "?"
    problem = url_problem(url)
    if problem:
        log.warning("export summary not posted: export.notify_url %s", problem)
        return False
    if not allow_private and is_ip_literal(host) and not is_public(host):
        # aiohttp does not consult the resolver for an address written out
        log.warning("export summary not posted to %s: a non-public address; set "
                    "export.notify_allow_private to allow it", host)
        return False
    body = {"msgtype": "text", "text": {"content": text}}
    connector = aiohttp.TCPConnector(
        resolver=None if allow_private else PublicOnlyResolver(),
        ssl=ssl_context if ssl_context is not None else True)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout),
                                         connector=connector) as s, \
                s.post(url, json=body, allow_redirects=False) as resp:
            answer = await resp.json(content_type=None) if resp.status == 200 else None
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        reason = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
        log.warning("export summary not posted to %s: %s%s", host, type(exc).__name__,
                    f" ({reason})" if isinstance(reason, OSError) and not allow_private
                    and "non-public" in str(reason) else "")
        return False
    if 300 <= status < 400:
        log.warning("export summary refused by %s: HTTP %s redirect, not followed", host,
                    status)
        return False
    if status != 200 or not isinstance(answer, dict) or answer.get("errcode", 0) != 0:
        log.warning("export summary refused by %s: HTTP %s %s", host, status,
                    str(answer)[:200] if answer is not None else "")
        return False
    return True
