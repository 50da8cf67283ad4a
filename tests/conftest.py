"""Shared pytest fixtures: add generic, documented fixtures here (several areas use them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.storage.sqlite.store import Store
from tests.fake_wechat import FakeWeChat, start_fake


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A running Store (the database's owning thread) on a fresh SQLite file."""
    running = Store(tmp_path / "bot.db")
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
