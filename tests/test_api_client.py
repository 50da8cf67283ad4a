"""The async WeChat API client against the fake WeChat server (real HTTP, real SQLite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from bot.config import WeChatConfig
from bot.metrics import Metrics
from bot.storage.sqlite.store import Store
from bot.storage.sqlite.tokens import SqliteTokenCache
from bot.wechat.api import (
    BatchTooLargeError,
    CachedToken,
    CredentialError,
    FatalAPIError,
    InvalidOpenIDError,
    QuotaError,
    RetryableError,
    TokenError,
    WeChatClient,
    check_response,
)
from tests.fake_wechat import (
    FakeWeChat,
    delay,
    drop,
    errcode,
    http_error,
    make_openids,
)

ClientFactory = Callable[..., WeChatClient]



@pytest.fixture
async def make_client(fake_wechat: FakeWeChat, store: Store
                      ) -> AsyncIterator[ClientFactory]:
    """Build clients on the fake, sharing the store's token cache (a 'restart' = new client)."""
    sessions: list[aiohttp.ClientSession] = []

    def build(**kwargs: object) -> WeChatClient:
        session = aiohttp.ClientSession()
        sessions.append(session)
        config = WeChatConfig(appid=fake_wechat.appid, secret=str(kwargs.pop("secret",
                              fake_wechat.secret)), api_base=fake_wechat.base_url)
        return WeChatClient(config, session, SqliteTokenCache(store), Metrics(), **kwargs)

    yield build
    for session in sessions:
        await session.close()


async def test_blacklist_and_unblacklist_apply(fake_wechat: FakeWeChat,
                                               make_client: ClientFactory) -> None:
    client = make_client()
    ids = make_openids(20)
    await client.batch_blacklist(ids)
    assert fake_wechat.blacklist == set(ids)
    await client.batch_unblacklist(ids[:5])
    assert fake_wechat.blacklist == set(ids[5:])
    assert len(fake_wechat.token_calls()) == 1
    assert fake_wechat.calls_to("stable_token")[0].payload["force_refresh"] is False


async def test_token_cached_across_restarts(fake_wechat: FakeWeChat,
                                            make_client: ClientFactory) -> None:
    await make_client().batch_blacklist(make_openids(1))
    await make_client().batch_blacklist(make_openids(2))
    assert len(fake_wechat.token_calls()) == 1


async def test_concurrent_first_calls_fetch_one_token(fake_wechat: FakeWeChat,
                                                      make_client: ClientFactory) -> None:
    client = make_client()
    ids = make_openids(10)
    await asyncio.gather(*(client.batch_blacklist([o]) for o in ids))
    assert len(fake_wechat.token_calls()) == 1
    assert fake_wechat.blacklist == set(ids)


async def test_revoked_token_renewed_once_and_retried(fake_wechat: FakeWeChat,
                                                      make_client: ClientFactory) -> None:
    client = make_client()
    await client.batch_blacklist(make_openids(1))
    fake_wechat.revoke_tokens()
    await client.batch_blacklist(make_openids(3))
    assert len(fake_wechat.token_calls()) == 2
    assert len(fake_wechat.calls_to("batchblacklist")) == 3  # ok, 40001, retried ok


async def test_persistent_40001_does_not_recurse(fake_wechat: FakeWeChat,
                                                 make_client: ClientFactory) -> None:
    client = make_client()
    fake_wechat.script("batchblacklist", errcode(40001), errcode(40001), errcode(40001))
    with pytest.raises(TokenError):
        await client.batch_blacklist(make_openids(1))
    assert len(fake_wechat.calls_to("batchblacklist")) == 2
    assert len(fake_wechat.token_calls()) <= 3


async def test_stable_token_handing_back_refused_token_forces_refresh(
        fake_wechat: FakeWeChat, make_client: ClientFactory) -> None:
    client = make_client()
    await client.batch_blacklist(make_openids(1))
    fake_wechat.script("batchblacklist", errcode(40001))
    await client.batch_blacklist(make_openids(2))
    stable = fake_wechat.calls_to("stable_token")
    assert [c.payload["force_refresh"] for c in stable] == [False, False, True]


async def test_falls_back_to_cgi_bin_token(fake_wechat: FakeWeChat,
                                           make_client: ClientFactory) -> None:
    fake_wechat.script("stable_token", http_error(404))
    await make_client().batch_blacklist(make_openids(1))
    assert len(fake_wechat.calls_to("token")) == 1
    assert fake_wechat.blacklist == set(make_openids(1))


async def test_wrong_secret_is_a_credential_error(fake_wechat: FakeWeChat,
                                                  make_client: ClientFactory) -> None:
    with pytest.raises(CredentialError) as info:
        await make_client(secret="wrong").batch_blacklist(make_openids(1))
    assert info.value.errcode == 40125
    assert "AppSecret" in info.value.explanation
    assert not fake_wechat.calls_to("token")  # no fallback spending the daily quota


async def test_token_renewed_before_expiry(fake_wechat: FakeWeChat, store: Store,
                                           make_client: ClientFactory) -> None:
    cache = SqliteTokenCache(store)
    soon = CachedToken(fake_wechat.issue_token(), 1_000_000 + 200)  # within the margin
    await cache.save(fake_wechat.appid, soon)
    client = make_client(clock=lambda: 1_000_000.0)
    await client.batch_blacklist(make_openids(1))
    assert len(fake_wechat.token_calls()) == 1
    saved = await cache.load(fake_wechat.appid)
    assert saved is not None and saved.token != soon.token


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        (errcode(-1), RetryableError, -1),
        (http_error(500), RetryableError, None),
        (errcode(45009), QuotaError, 45009),
        (errcode(45011), QuotaError, 45011),
        (errcode(40003), InvalidOpenIDError, 40003),
        (errcode(49003), InvalidOpenIDError, 49003),
        (errcode(40032), BatchTooLargeError, 40032),
        (errcode(48001), FatalAPIError, 48001),
        (errcode(40999, "something new"), FatalAPIError, 40999),
        (drop(), RetryableError, None),
        (http_error(429), RetryableError, None),
        (http_error(200), RetryableError, None),  # a proxy's HTML page
        (http_error(404), FatalAPIError, None),
    ],
    ids=["busy", "http500", "daily", "minute", "invalid", "not-ours", "too-many",
         "unauthorised", "unknown", "dropped", "http429", "not-json", "http404"],
)
async def test_errors_map_to_classes(fake_wechat: FakeWeChat, make_client: ClientFactory,
                                     answer: object, error: type, code: int | None) -> None:
    client = make_client()
    await client.access_token()
    fake_wechat.script("batchblacklist", answer)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        await client.batch_blacklist(make_openids(2))
    assert info.value.errcode == code
    assert fake_wechat.blacklist == set()


async def test_redirects_are_not_followed(fake_wechat: FakeWeChat,
                                          make_client: ClientFactory) -> None:
    # Following one would send the access_token in the query to wherever it points.
    client = make_client()
    await client.access_token()
    fake_wechat.script("batchblacklist", http_error(302))
    with pytest.raises(FatalAPIError) as info:
        await client.batch_blacklist(make_openids(1))
    assert info.value.http_status == 302


async def test_connection_errors_carry_no_url(fake_wechat: FakeWeChat,
                                              make_client: ClientFactory) -> None:
    client = make_client()
    await client.access_token()
    fake_wechat.script("batchblacklist", drop())
    with pytest.raises(RetryableError) as info:
        await client.batch_blacklist(make_openids(1))
    assert info.value.__context__ is None and info.value.__cause__ is None


async def test_timeout_is_retryable(fake_wechat: FakeWeChat,
                                    make_client: ClientFactory) -> None:
    client = make_client(timeout=0.2)
    await client.access_token()
    fake_wechat.script("batchblacklist", delay(1.0))
    with pytest.raises(RetryableError, match="timeout"):
        await client.batch_blacklist(make_openids(1))


def test_plain_explanations() -> None:
    for code, words in [(45009, "quota"), (45011, "minute"), (48001, "verified")]:
        with pytest.raises(Exception) as info:
            check_response(200, errcode(code))
        assert words in info.value.explanation  # type: ignore[attr-defined]


async def test_token_never_logged(fake_wechat: FakeWeChat, make_client: ClientFactory,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    fake_wechat.script("batchblacklist", errcode(40001), errcode(-1))
    with pytest.raises(RetryableError) as info:
        await client.batch_blacklist(make_openids(1))
    tokens = list(fake_wechat.tokens)
    assert tokens
    text = caplog.text + str(info.value) + repr(info.value)
    assert all(t not in text for t in tokens)
    assert fake_wechat.secret not in text


async def test_metrics_count_calls(fake_wechat: FakeWeChat, store: Store) -> None:
    metrics = Metrics()
    config = WeChatConfig(appid=fake_wechat.appid, secret=fake_wechat.secret,
                          api_base=fake_wechat.base_url)
    async with aiohttp.ClientSession() as session:
        client = WeChatClient(config, session, SqliteTokenCache(store), metrics)
        fake_wechat.script("batchblacklist", errcode(-1))
        with pytest.raises(RetryableError):
            await client.batch_blacklist(make_openids(1))
        await client.batch_blacklist(make_openids(1))
    text = metrics.render().decode()
    assert 'bot_api_calls_total{endpoint="batchblacklist",outcome="-1"} 1.0' in text
    assert 'bot_api_calls_total{endpoint="batchblacklist",outcome="ok"} 1.0' in text
    assert 'bot_api_calls_total{endpoint="stable_token",outcome="ok"} 1.0' in text


@pytest.mark.parametrize("end", ["count0", "empty_next", "repeat"])
async def test_blacklist_paging_25001(fake_wechat: FakeWeChat, make_client: ClientFactory,
                                      end: str) -> None:
    ids = make_openids(25_001)
    fake_wechat.blacklist.update(ids)
    fake_wechat.page_end = end
    client = make_client()
    seen: list[str] = []
    begin = ""
    for _ in range(10):
        page = await client.get_blacklist_page(begin)
        assert page.total == 25_001
        assert page.count == len(page.openids)
        seen.extend(page.openids)
        if page.count == 0 or not page.next_openid or page.next_openid == begin:
            break
        begin = page.next_openid
    assert seen == ids
    assert [c.payload["begin_openid"] for c in fake_wechat.calls_to("getblacklist")][:3] == [
        "", ids[9_999], ids[19_999]]


async def test_paging_small_pages_and_empty_list(fake_wechat: FakeWeChat,
                                                 make_client: ClientFactory) -> None:
    client = make_client()
    empty = await client.get_blacklist_page("")
    assert (empty.total, empty.count, empty.openids, empty.next_openid) == (0, 0, [], "")
    fake_wechat.page_size = 3
    fake_wechat.blacklist.update(make_openids(7))
    page = await client.get_blacklist_page(make_openids(7)[2])
    assert page.openids == make_openids(7)[3:6]
    assert page.next_openid == make_openids(7)[5]
