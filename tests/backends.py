"""Reading a test's database whichever backend it is on (plain SQL both understand)."""

from __future__ import annotations

import sqlite3
from typing import Any

from bot.config import Config


async def fetch(config: Config, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) on ``config``'s database."""
    if config.storage.backend == "postgres":
        import asyncpg

        for i in range(len(args)):
            sql = sql.replace("?", f"${i + 1}", 1)
        conn = await asyncpg.connect(config.storage.dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    db = sqlite3.connect(config.storage.path)
    try:
        return [tuple(r) for r in db.execute(sql, args).fetchall()]
    finally:
        db.close()


async def fetchval(config: Config, sql: str, *args: Any) -> Any:
    rows = await fetch(config, sql, *args)
    return rows[0][0] if rows else None
