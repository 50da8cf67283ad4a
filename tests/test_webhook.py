"""The webhook over real HTTP: verification, every push shape, refusals, retries, storage."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app import build_app
from bot.config import Config, build_config
from tests.backends import fetch
from tests.fake_wechat import FakeWeChat, errcode
from tests.pushes import (
    AES_KEY,
    APPID,
    OLD_AES_KEY,
    RULES,
    TOKEN,
    decrypt_reply,
    encrypted,
    load_samples,
    signed_query,
    text_xml,
    with_openid,
)

OPENID = "oTestFollower0000000000000001"
Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


def make_config(tmp_path: Path, storage: dict[str, str] | None = None, **wechat: str) -> Config:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(exist_ok=True)
    (rules_dir / "test.yaml").write_text(RULES, encoding="utf-8")
    return build_config({
        "wechat": {"token": TOKEN, "appid": APPID, **wechat},
        "storage": storage or {"path": str(tmp_path / "bot.db")},
        "rules": {"dir": str(rules_dir)},
        "actions": {"dry_run": True},
        "export": {"dir": str(tmp_path / "exports")},
    })


@pytest.fixture
def config(tmp_path: Path, backend: dict[str, str]) -> Config:
    """The webhook's config on each backend (SQLite, then PostgreSQL)."""
    return make_config(tmp_path, backend, encoding_aes_key=AES_KEY,
                       previous_encoding_aes_key=OLD_AES_KEY)


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: Config) -> Client:
    return await aiohttp_client(build_app(config))


def db_rows(config: Config, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    if config.storage.backend == "postgres":  # asyncpg, on a loop of its own
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, fetch(config, sql, *params)).result()
    conn = sqlite3.connect(config.storage.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def post(client: Client, body: str | bytes, query: dict[str, str] | None = None) -> Any:
    return await client.post("/wechat", params=signed_query() if query is None else query,
                             data=body)


async def test_url_verification(client: Client) -> None:
    good = await client.get("/wechat", params=signed_query(echostr="hello123"))
    assert good.status == 200 and await good.text() == "hello123"
    forged = await client.get("/wechat", params=signed_query(token="wrong", echostr="x"))
    assert forged.status == 403
    missing = await client.get("/wechat", params={"echostr": "x"})
    assert missing.status == 403


async def test_text_push_is_committed_before_success(client: Client, config: Config) -> None:
    response = await post(client, text_xml(OPENID, "hello there", 1001))
    assert response.status == 200 and await response.text() == "success"
    rows = db_rows(config, "SELECT openid, msg_type, texts FROM events")
    assert rows == [(OPENID, "text", '{"content": "hello there"}')]


@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_every_documented_push_shape_is_accepted(client: Client, config: Config,
                                                       mode: str) -> None:
    samples = load_samples()
    assert len(samples) == 46
    for index, sample in enumerate(samples):
        xml = with_openid(sample["xml"], f"oSample{index:021d}")
        if mode == "plain":
            response = await post(client, xml)
        else:
            query, body = encrypted(xml)
            response = await post(client, body, query)
        assert response.status == 200, (sample["event"], await response.text())
        assert await response.text() == "success"
    stored = db_rows(config, "SELECT msg_type, event FROM events ORDER BY id")
    assert len(stored) == 46
    assert ("notsure", None) in stored and ("event", "subscribe") in stored
    assert {m for m, _ in stored} >= {"text", "image", "voice", "video", "location", "link"}


async def test_safe_mode_reply_is_encrypted(client: Client) -> None:
    query, body = encrypted(text_xml(OPENID, "你好机器人", 2001))
    response = await post(client, body, query)
    assert response.status == 200
    reply = await response.text()
    assert "<Encrypt>" in reply
    assert "您好，已收到" in decrypt_reply(reply)


async def test_plain_reply_and_compatible_mode(client: Client) -> None:
    response = await post(client, text_xml(OPENID, "你好机器人", 2002))
    assert response.status == 200
    reply = await response.text()
    assert "<Content><![CDATA[您好，已收到]]></Content>" in reply
    assert f"<ToUserName><![CDATA[{OPENID}]]></ToUserName>" in reply


async def test_previous_aes_key_still_decrypts(client: Client, config: Config) -> None:
    query, body = encrypted(text_xml(OPENID, "rotating", 3001), key=OLD_AES_KEY)
    response = await post(client, body, query)
    assert response.status == 200
    assert db_rows(config, "SELECT count(*) FROM events") == [(1,)]


async def test_unknown_key_does_not_decrypt(client: Client) -> None:
    stranger = "Q" * 43
    query, body = encrypted(text_xml(OPENID, "x", 3002), key=stranger)
    response = await post(client, body, query)
    assert response.status == 400


@pytest.mark.parametrize(
    "query",
    [
        signed_query(token="forged"),
        signed_query(timestamp=int(time.time()) - 3600),
        signed_query(timestamp=int(time.time()) + 3600),
        {},
        {"signature": "x", "timestamp": "abc", "nonce": "n"},
    ],
    ids=["bad-signature", "stale", "future", "missing", "non-numeric-timestamp"],
)
async def test_forged_or_stale_pushes_get_403(client: Client, config: Config,
                                              query: dict[str, str]) -> None:
    response = await post(client, text_xml(OPENID, "加微信", 4001), query)
    assert response.status == 403
    assert db_rows(config, "SELECT count(*) FROM events") == [(0,)]


async def test_bad_msg_signature_gets_403(client: Client) -> None:
    query, body = encrypted(text_xml(OPENID, "x", 4002))
    query["msg_signature"] = "0" * 40
    assert (await post(client, body, query)).status == 403


async def test_the_signature_is_wechats_documented_one(client: Client, config: Config) -> None:
    """Every other test signs with the service's own signer; here the signature is worked
    out as WeChat documents it (the token, timestamp and nonce sorted, joined, SHA1 in
    hex), so a signer that drifted from it cannot pass with the tests that share it."""
    timestamp, nonce = str(int(time.time())), "abc"  # sorted: timestamp, nonce, token

    def query(*parts: str) -> dict[str, str]:
        digest = hashlib.sha1("".join(parts).encode()).hexdigest()
        return {"signature": digest, "timestamp": timestamp, "nonce": nonce}

    unsorted = await post(client, text_xml(OPENID, "x", 4003), query(TOKEN, timestamp, nonce))
    assert unsorted.status == 403
    documented = query(*sorted((TOKEN, timestamp, nonce)))
    assert (await post(client, text_xml(OPENID, "x", 4004), documented)).status == 200
    assert db_rows(config, "SELECT msg_id FROM events") == [("4004",)]


XXE = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>a</ToUserName><FromUserName>oAttacker0001</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content>"
    "<MsgId>1</MsgId></xml>"
)
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
              for i in range(1, 10))
    + "]><xml><FromUserName>oAttacker0001</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&lol9;</Content></xml>"
)


@pytest.mark.parametrize(
    "body",
    ["<xml><FromUserName>", "not xml at all", "", "<root><a>1</a></root>",
     "<xml><FromUserName>oX0000001</FromUserName><MsgType>text</MsgType></xml>",
     XXE, LAUGHS, XXE.replace("DOCTYPE", "doctype")],
    ids=["truncated", "garbage", "empty", "wrong-root", "no-createtime", "xxe", "billion-laughs",
         "lowercase-doctype"],
)
async def test_malformed_pushes_get_400(client: Client, config: Config, body: str) -> None:
    response = await post(client, body)
    assert response.status == 400
    assert db_rows(config, "SELECT count(*) FROM events") == [(0,)]


ENTITY_PUSH = ('<!DOCTYPE xml [<!ENTITY e "expanded-entity">]><xml><ToUserName>gh</ToUserName>'
               f"<FromUserName>{OPENID}</FromUserName><CreateTime>1700000000</CreateTime>"
               "<MsgType>text</MsgType><Content>&e;</Content><MsgId>77</MsgId></xml>")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
async def test_doctype_in_another_encoding_is_refused(client: Client, config: Config,
                                                      encoding: str) -> None:
    # The parser would honour the byte order of these bodies; the byte-level DOCTYPE
    # check cannot read them, so they must not reach it.
    response = await post(client, ENTITY_PUSH.encode(encoding))
    assert response.status == 400
    assert db_rows(config, "SELECT count(*) FROM events") == [(0,)]


@pytest.mark.parametrize("declared", ["gbk", "utf-7", "no-such-codec"])
async def test_declared_encoding_is_not_a_server_error(client: Client, config: Config,
                                                       declared: str) -> None:
    # Read before the msg_signature check in safe mode: anyone can send these.
    body = f'<?xml version="1.0" encoding="{declared}"?><xml><Encrypt>x</Encrypt></xml>'
    query = {"encrypt_type": "aes", "msg_signature": "0" * 40, "timestamp": "1", "nonce": "n"}
    assert (await post(client, body, query)).status in (400, 403)
    plain = text_xml(OPENID, "hi", 91).replace("<xml>", f'<?xml version="1.0" encoding='
                                                         f'"{declared}"?><xml>', 1)
    assert (await post(client, plain)).status == 200  # WeChat's UTF-8, whatever it declares


@pytest.mark.parametrize("create_time", ["\u00b2", "9" * 5000, "1" * 11, "-1", " "])
async def test_odd_create_time_gets_400(client: Client, config: Config, create_time: str) -> None:
    response = await post(client, text_xml(OPENID, "hi", 88, create_time=create_time))
    assert response.status == 400
    assert db_rows(config, "SELECT count(*) FROM events") == [(0,)]


async def test_encrypted_doctype_is_refused(client: Client) -> None:
    query, body = encrypted(XXE)
    assert (await post(client, body, query)).status == 400


async def test_oversized_body_gets_413(client: Client, config: Config) -> None:
    huge = text_xml(OPENID, "x" * (config.server.max_body_bytes + 10), 5001)
    assert (await post(client, huge)).status == 413


async def test_concurrent_retries_are_processed_once(client: Client, config: Config) -> None:
    xml = text_xml(OPENID, "加微信 abc", 6001)
    responses = await asyncio.gather(*(post(client, xml) for _ in range(4)))
    assert [r.status for r in responses] == [200] * 4
    assert db_rows(config, "SELECT count(*) FROM events") == [(1,)]
    assert db_rows(config, "SELECT count(*) FROM decisions WHERE rule_id='contact-spam'") == [(1,)]
    assert db_rows(config, "SELECT kind, status FROM actions") == [("blacklist", "dry_run")]


WARN_RULES = """
rules:
  - id: ad-warn
    keywords: [广告]
    action: warn
    warn_limit: 1
"""


async def test_retry_after_a_failed_commit_is_not_counted_twice(aiohttp_client: MakeClient,
                                                                tmp_path: Path) -> None:
    config = make_config(tmp_path)
    (tmp_path / "rules" / "test.yaml").write_text(WARN_RULES, encoding="utf-8")
    client = await aiohttp_client(build_app(config))
    conn = sqlite3.connect(config.storage.path)  # SQLite itself refuses the first delivery
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.msg_id = '501'"
                 " BEGIN SELECT RAISE(ABORT, 'injected'); END")
    conn.commit()
    push = text_xml(OPENID, "这是广告吗", 501)
    assert (await post(client, push)).status == 500
    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    conn.close()
    assert (await post(client, push)).status == 200  # WeChat's retry
    assert db_rows(config, "SELECT rule_id, action, evidence LIKE '%warning 1 of 1%'"
                           " FROM decisions") == [("ad-warn", "warn", 1)]
    assert db_rows(config, "SELECT count(*) FROM actions") == [(0,)]
    # the ladder goes on from one warning, not two
    assert (await post(client, text_xml(OPENID, "又是广告", 502))).status == 200
    assert db_rows(config, "SELECT kind FROM actions") == [("blacklist",)]


async def test_event_retries_use_sender_and_time(client: Client, config: Config) -> None:
    event = (
        "<xml><ToUserName>gh</ToUserName><FromUserName>oEventUser0000001</FromUserName>"
        "<CreateTime>1700000000</CreateTime><MsgType>event</MsgType>"
        "<Event>subscribe</Event></xml>"
    )
    for _ in range(3):
        assert (await post(client, event)).status == 200
    later = event.replace("1700000000", "1700000001")
    assert (await post(client, later)).status == 200
    assert db_rows(config, "SELECT count(*) FROM events") == [(2,)]


async def test_restart_keeps_events_and_still_drops_retries(
        aiohttp_client: MakeClient, config: Config) -> None:
    push = text_xml(OPENID, "before restart", 7001)  # a retry is the same body, CreateTime too
    first = await aiohttp_client(build_app(config))
    assert (await post(first, push)).status == 200
    await first.close()
    second = await aiohttp_client(build_app(config))
    assert (await post(second, push)).status == 200
    assert (await post(second, text_xml(OPENID, "after restart", 7002))).status == 200
    contents = db_rows(config, "SELECT texts FROM events ORDER BY id")
    assert contents == [('{"content": "before restart"}',), ('{"content": "after restart"}',)]


async def test_healthz_and_metrics(client: Client, config: Config) -> None:
    await post(client, text_xml(OPENID, "加微信", 8001))
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["rules"] == 2
    assert abs(health["rules_loaded_at"] - time.time()) < 60
    assert health["pending_actions"] == 0 and health["dry_run"] is True
    assert db_rows(config, "SELECT status FROM actions") == [("dry_run",)], \
        "dry-run records the would-be action, never queues it"
    metrics = await (await client.get("/metrics")).text()
    assert 'bot_pushes_total{msg_type="text",outcome="ok"} 1.0' in metrics
    assert 'bot_rule_hits_total{action="blacklist",rule_id="contact-spam"} 1.0' in metrics
    assert "bot_push_latency_seconds_bucket" in metrics


def scraped(metrics: str, name: str) -> float | None:
    """The value of an unlabelled series in a /metrics text, None when absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_metrics_tell_the_size_of_group_commits(client: Client, config: Config) -> None:
    names = ("bot_store_commits_total", "bot_store_committed_calls_total")
    before = await (await client.get("/metrics")).text()
    answers = await asyncio.gather(*(post(client, text_xml(OPENID, f"第{n}条", 8100 + n))
                                     for n in range(20)))
    assert [a.status for a in answers] == [200] * 20
    after = await (await client.get("/metrics")).text()
    if config.storage.backend == "postgres":  # no writer thread, no group commits
        assert [scraped(after, name) for name in names] == [None, None]
        return
    commits, calls = ((scraped(after, name) or 0.0) - (scraped(before, name) or 0.0)
                      for name in names)
    assert calls >= 20, "every push was committed through the writer"
    assert 1 <= commits <= calls


async def test_token_missing_refuses_everything(aiohttp_client: MakeClient,
                                                tmp_path: Path) -> None:
    config = make_config(tmp_path, token="")
    client = await aiohttp_client(build_app(config))
    assert (await post(client, text_xml(OPENID, "x", 9001), signed_query(token=""))).status == 403


def test_app_factory_builds_routes(config: Config) -> None:
    app = build_app(config)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/wechat", "/healthz", "/metrics"} <= paths
    assert isinstance(app, web.Application)


async def test_old_message_content_is_purged_on_start(aiohttp_client: MakeClient,
                                                      config: Config) -> None:
    from bot.core.models import Decision
    from bot.services import build_services
    from bot.wechat.push import parse_event

    old = parse_event(text_xml(OPENID, "my phone is 13800000000", 9901).encode())
    fresh = parse_event(text_xml(OPENID, "recent", 9902).encode())
    long_ago = int(time.time()) - (config.storage.retention_days + 1) * 86400
    async with build_services(config, clock=lambda: long_ago) as services:
        await services.storage.recorder.record(old, Decision())
    async with build_services(config) as services:
        await services.storage.recorder.record(fresh, Decision())
    client = await aiohttp_client(build_app(config))

    def purged() -> list[tuple[Any, bool]]:
        return [(texts, bool(flag)) for texts, flag in
                db_rows(config, "SELECT texts, purged FROM events ORDER BY id")]

    for _ in range(100):
        if [flag for _, flag in purged()] == [True, False]:
            break
        await asyncio.sleep(0.02)  # the purge runs as a background task at start-up
    assert purged() == [(None, True), ('{"content": "recent"}', False)]
    assert (await client.get("/healthz")).status == 200


async def test_broken_rule_edit_keeps_rules_and_shows_in_health(client: Client,
                                                                config: Config) -> None:
    from bot.app import SERVICE

    service = client.app[SERVICE]
    assert service.watcher is not None
    (Path(config.rules.dir) / "broken.yaml").write_text(
        "rules:\n  - id: Bad Id\n    keywords: [x]\n", encoding="utf-8")
    assert await service.watcher.check_once()
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "degraded" and "broken.yaml:2" in health["rules_error"]
    assert health["rules"] == 2, "the last good rules stay in force"
    response = await post(client, text_xml(OPENID, "加微信", 9950))
    assert response.status == 200
    assert db_rows(config, "SELECT rule_id FROM decisions") == [("contact-spam",)]
    metrics = await (await client.get("/metrics")).text()
    assert "bot_rule_reload_errors_total 1.0" in metrics


async def raw_post(client: Client, head_extra: str, parts: list[bytes]) -> bytes:
    """POST over a raw socket, sending the body in separate packets."""
    from urllib.parse import urlencode

    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"POST /wechat?{urlencode(signed_query())} HTTP/1.1\r\n"
                 f"Host: x\r\nConnection: close\r\n{head_extra}\r\n".encode())
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.05)  # let the server see each packet on its own
    response = await reader.read()
    writer.close()
    return response


async def test_body_split_across_packets_is_read_whole(client: Client, config: Config) -> None:
    body = text_xml(OPENID, "分两次到达的消息 " * 20, 9960).encode()
    response = await raw_post(client, f"Content-Length: {len(body)}\r\n",
                              [body[:100], body[100:]])
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"success")
    assert db_rows(config, "SELECT count(*) FROM events") == [(1,)]


async def test_chunked_body_over_the_cap_gets_413(client: Client, config: Config) -> None:
    chunk = b"x" * 8192
    chunks = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
              for _ in range(config.server.max_body_bytes // len(chunk) + 2)]
    response = await raw_post(client, "Transfer-Encoding: chunked\r\n", [*chunks, b"0\r\n\r\n"])
    assert response.startswith(b"HTTP/1.1 413")


async def test_chunked_body_over_the_cap_in_one_packet_gets_413(
        aiohttp_client: MakeClient, tmp_path: Path) -> None:
    # All of it is in when the handler starts: it is taken as it lies, then measured.
    rules = make_config(tmp_path).rules.dir
    config = build_config({
        "wechat": {"token": TOKEN, "appid": APPID},
        "storage": {"path": str(tmp_path / "bot.db")},
        "rules": {"dir": rules},
        "server": {"max_body_bytes": 1024},
        "export": {"dir": str(tmp_path / "exports")},
    })
    client = await aiohttp_client(build_app(config))
    body = text_xml(OPENID, "长" * 400, 9965).encode()
    assert 1024 < len(body) < 2048
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    response = await raw_post(client, "Transfer-Encoding: chunked\r\n", [chunked])
    assert response.startswith(b"HTTP/1.1 413")
    small = text_xml(OPENID, "短", 9966).encode()
    response = await raw_post(client, "Transfer-Encoding: chunked\r\n",
                              [f"{len(small):x}\r\n".encode() + small + b"\r\n0\r\n\r\n"])
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert db_rows(config, "SELECT msg_id FROM events") == [("9966",)]


async def test_reply_uses_the_key_the_push_came_in(client: Client) -> None:
    query, body = encrypted(text_xml(OPENID, "你好机器人", 9970), key=OLD_AES_KEY)
    reply = await (await post(client, body, query)).text()
    assert "您好，已收到" in decrypt_reply(reply, key=OLD_AES_KEY)


async def test_deeply_nested_xml_gets_400(client: Client) -> None:
    deep = "<a>" * 5000 + "x" + "</a>" * 5000
    body = (f"<xml><FromUserName>{OPENID}</FromUserName><CreateTime>1</CreateTime>"
            f"<MsgType>event</MsgType><Event>x</Event>{deep}</xml>")
    assert (await post(client, body)).status == 400


async def test_database_down_stays_503_while_sending_is_paused(
        aiohttp_client: MakeClient, tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    from bot.app import SERVICE

    config = build_config({
        "wechat": {"token": TOKEN, "appid": fake_wechat.appid, "secret": fake_wechat.secret,
                   "api_base": fake_wechat.base_url},
        "storage": {"path": str(tmp_path / "bot.db")},
        "rules": {"dir": make_config(tmp_path).rules.dir},
        "actions": {"max_delay_seconds": 0.05},
        "export": {"dir": str(tmp_path / "exports")},
    })
    fake_wechat.script("batchblacklist", errcode(45009))
    client = await aiohttp_client(build_app(config))
    assert (await post(client, text_xml(OPENID, "加微信", 9960))).status == 200
    for _ in range(200):
        health = await (await client.get("/healthz")).json()
        if health.get("actions_paused"):
            break
        await asyncio.sleep(0.02)
    assert health["status"] == "degraded" and "45009" in health["actions_paused"]
    store = client.app[SERVICE].services.storage.store
    await store.close()  # the database is gone; sending is still paused
    response = await client.get("/healthz")
    health = await response.json()
    assert response.status == 503 and health["status"] == "down", health
    assert health["actions_paused"], "the pause is still reported beside the outage"
    await store.start()  # back, so the app's own shutdown can close it again
