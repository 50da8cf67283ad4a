"""The test PostgreSQL fixture itself: a real server, a fresh database per test."""

from __future__ import annotations

import asyncpg

from tests.pgserver import PostgresServer


async def test_each_test_gets_its_own_migrated_database(pg_dsn: str,
                                                     postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
        await conn.execute("INSERT INTO kv VALUES ('k', 'v', 0)")  # the next test's is empty
        assert str(postgres_server.socket_dir) in pg_dsn
        assert (await conn.fetchval("SHOW server_version")).startswith("15")
    finally:
        await conn.close()
