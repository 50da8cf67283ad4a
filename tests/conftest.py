"""Shared pytest fixtures: add generic, documented fixtures here (several areas use them)."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import itertools
import os
import sys
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from bot.config import build_config
from bot.services import build_services
from bot.storage.sqlite.store import Store
from tests import pgserver
from tests.fake_wechat import FakeWeChat, start_fake
from tests.pgserver import PostgresServer

# pytest-timeout (60 s, signal method) fails a test that overruns, but its exception can
# be swallowed where asyncio catches BaseException in a callback, and nothing bounds a
# teardown that hangs after it. This watchdog is the backstop: an item still running
# after HARD_LIMIT seconds (setup, call and teardown together) prints every thread's
# stack and the event loop's tasks, then ends the run, so CI fails in minutes with the
# place of the hang instead of sitting until its own limit.
HARD_LIMIT = float(os.environ.get("BOT_TEST_HARD_LIMIT", "180"))


def _dump_and_exit(item: pytest.Item) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # the dump must reach the real stderr, not the capture file
        capture.suspend_global_capture(in_=True)
    err, nodeid = sys.stderr, item.nodeid
    print(f"\n\n*** {nodeid} still running after {HARD_LIMIT:.0f} s: stacks follow ***",
          file=err, flush=True)
    faulthandler.dump_traceback(file=err, all_threads=True)
    try:  # the running loops' tasks, read from this thread: good enough for a post-mortem
        for loop in (o for o in gc.get_objects()
                     if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()):
            for task in list(asyncio.all_tasks(loop)):
                print(f"--- {task!r}", file=err)
                task.print_stack(file=err)
    except Exception as exc:  # a diagnostic must not mask the dump
        print(f"(tasks unavailable: {exc!r})", file=err)
    err.flush()
    os._exit(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    timer = threading.Timer(HARD_LIMIT, _dump_and_exit, (item,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A running Store (the database's owning thread) on a fresh SQLite file, built as
    the service builds it (:func:`bot.services.build_services`)."""
    config = build_config({"storage": {"path": str(tmp_path / "bot.db")}})
    running = build_services(config).storage.store
    await running.start()
    yield running
    await running.close()


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWeChat]:
    """A running fake WeChat API (see tests/fake_wechat.py) on an ephemeral 127.0.0.1 port.

    Use ``.base_url`` as ``wechat.api_base``, ``.appid``/``.secret`` as credentials;
    inspect ``.blacklist`` (a set), ``.calls`` / ``.calls_to(name)``; inject faults with
    ``.script(endpoint, errcode(-1), http_error(500), delay(s), drop(), ...)``, ``.invalid``
    (OpenIDs that fail a batch with 40003), ``.revoke_tokens()``, ``.down = True``;
    ``.page_size`` / ``.page_end`` shape getblacklist paging.
    """
    fake = FakeWeChat()
    runner = await start_fake(fake)
    try:
        yield fake
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (tests/pgserver.py: initdb + pg_ctl in a
    temp dir, a free port, its unix socket there; run as the ``postgres`` OS user when
    we are root). Skipped where the binaries are missing, except under CI=true, where a
    missing server is a failure (.ci/run installs Debian's ``postgresql``)."""
    if not pgserver.available():
        if os.environ.get("CI"):
            pytest.fail(pgserver.INSTALL_HINT)
        pytest.skip(pgserver.INSTALL_HINT)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


_databases = itertools.count(1)
_TEMPLATE = "bot_template"


@pytest.fixture
async def pg_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a fresh database on the session's server, one per test, migrated:
    copied from a template migrated once (CREATE DATABASE ... TEMPLATE is a file copy)."""
    import asyncpg

    from bot.storage.postgres.schema import migrate

    name = f"t{os.getpid()}_{next(_databases)}"
    conn = await asyncpg.connect(postgres_server.dsn())
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", _TEMPLATE):
            await conn.execute(f"CREATE DATABASE {_TEMPLATE} TEMPLATE template0")
            template = await asyncpg.connect(postgres_server.dsn(_TEMPLATE))
            try:
                await migrate(template)
            finally:
                await template.close()
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    finally:
        await conn.close()
    return postgres_server.dsn(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The ``storage`` config section of each backend: tests that take it run twice,
    once on a fresh SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "bot.db")}
    return {"backend": "postgres", "dsn": request.getfixturevalue("pg_dsn")}
