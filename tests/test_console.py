"""The web console over real HTTP: sign-in, guards, CSRF, the pages and their buttons."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from bot.cli import main
from bot.config import build_config
from bot.core.errors import ConfigError
from bot.core.passwords import hash_password, verify_password
from tests.fake_wechat import FakeWeChat, errcode, make_openids
from tests.pushes import TOKEN, signed_query, text_xml

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)
RULES = """
rules:
  - id: contact-spam
    description: 加微信引流
    keywords: [加微信]
    action: blacklist
  - id: job-scam
    keywords: [刷单]
    contact: [wechat_id, qq, phone]
    action: blacklist
"""
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_config(tmp_path: Path, fake: FakeWeChat | None = None, **admin: Any) -> Any:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    wechat: dict[str, Any] = {"token": TOKEN}
    if fake is not None:
        wechat |= {"appid": fake.appid, "secret": fake.secret, "api_base": fake.base_url}
    return build_config({
        "wechat": wechat, "storage": {"path": str(tmp_path / "bot.db")},
        "rules": {"dir": str(rules)}, "actions": {"max_delay_seconds": 0.2},
        "export": {"dir": str(tmp_path / "exports")},
        "admin": {"password": HASH, **admin},
    })


async def sign_in(client: Any, password: str = PASSWORD, **headers: str) -> Any:
    page = await client.get("/admin/login")
    token = CSRF.search(await page.text())
    assert token is not None
    return await client.post("/admin/login", data={"password": password, "csrf": token[1],
                                                   "next": "/admin/queue"},
                             allow_redirects=False, headers=headers)


async def csrf_of(client: Any, path: str = "/admin") -> str:
    found = CSRF.search(await (await client.get(path)).text())
    assert found is not None
    return found[1]


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)  # polling an outside effect, not timing logic
    raise AssertionError("condition not reached in time")


def test_password_hash_round_trip_and_config_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_password(HASH, PASSWORD) and not verify_password(HASH, PASSWORD + "x")
    assert hash_password(PASSWORD) != HASH  # salted
    with pytest.raises(ConfigError, match="'admin.password' must be a password hash") as exc:
        build_config({"admin": {"password": "plain-text-password"}})
    assert "plain-text-password" not in str(exc.value)  # never echoed
    with pytest.raises(ConfigError, match="unknown key 'admin.pasword'"):
        build_config({"admin": {"pasword": HASH}})
    with pytest.raises(ConfigError, match="admin.cookie_secure"):
        build_config({"admin": {"cookie_secure": "sometimes"}})
    with pytest.raises(ConfigError, match="not be under /admin"):
        build_config({"server": {"path": "/admin/wechat"}})
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("s3cret-enough\n"))
    assert main(["admin", "hash-password"]) == 0  # needs no config file
    made = capsys.readouterr().out.strip()
    assert verify_password(made, "s3cret-enough")
    config = tmp_path / "config.yaml"
    config.write_text("storage:\n  path: x.db\n", encoding="utf-8")
    from bot.config import load_config

    assert load_config(str(config), env={"BOT_ADMIN_PASSWORD": made}).admin.password == made


async def test_console_is_off_without_a_password(aiohttp_client: Any, tmp_path: Path) -> None:
    config = console_config(tmp_path, password="")
    client = await aiohttp_client(build_app(config))
    assert (await client.get("/admin")).status == 404
    assert (await client.get("/admin/login")).status == 404


async def test_nothing_is_reachable_without_a_session(aiohttp_client: Any,
                                                      tmp_path: Path) -> None:
    app = build_app(console_config(tmp_path))
    client = await aiohttp_client(app)
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/admin")
              and r.method != "HEAD"}
    assert len(routes) >= 14
    for method, path in sorted(routes):
        if path == "/admin/login":
            continue
        url = path.replace("{name}", "report-2026-01-01.html")
        response = await client.request(method, url, allow_redirects=False)
        if method == "GET":
            assert response.status == 303, (method, path)
            assert response.headers["Location"].startswith("/admin/login?next=")
        else:
            assert response.status == 403, (method, path)
    # a forged or stale cookie is no session either
    client.session.cookie_jar.update_cookies({"bot_admin": "forged"})
    assert (await client.get("/admin/queue", allow_redirects=False)).status == 303


async def test_sign_in_cookie_rate_limit_and_csrf(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(build_app(console_config(tmp_path, login_attempts=3)))
    for _ in range(3):
        assert (await sign_in(client, "wrong password")).status == 401
    limited = await sign_in(client)  # the right one, but too many failures from here
    assert limited.status == 429 and "分钟后再试" in await limited.text()
    client2 = await aiohttp_client(build_app(console_config(tmp_path)))
    response = await sign_in(client2, **{"X-Forwarded-Proto": "https"})
    assert response.status == 303 and response.headers["Location"] == "/admin/queue"
    cookie = next(v for v in response.headers.getall("Set-Cookie")
                  if v.startswith("bot_admin="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert "Path=/admin" in cookie
    # over plain http (auto) the cookie is not Secure, so the browser sends it back
    client3 = await aiohttp_client(build_app(console_config(tmp_path)))
    plain = await sign_in(client3)
    assert "Secure" not in plain.headers["Set-Cookie"]
    page = await client3.get("/admin/queue")
    assert page.status == 200 and page.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "no-store" in page.headers["Cache-Control"]
    # a change without the form's token, or posted from another site, is refused
    assert (await client3.post("/admin/queue/resume", data={})).status == 403
    token = await csrf_of(client3, "/admin/queue")
    assert (await client3.post("/admin/queue/resume", data={"csrf": token},
                               headers={"Origin": "https://evil.example"})).status == 403
    done = await client3.post("/admin/queue/resume", data={"csrf": token})
    assert done.status == 200 and "发送未暂停" in await done.text()
    # signing out ends the session on the server
    await client3.post("/admin/logout", data={"csrf": token})
    assert (await client3.get("/admin", allow_redirects=False)).status == 303


async def test_pages_in_chinese_and_english_without_secrets(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = console_config(tmp_path, fake_wechat)
    client = await aiohttp_client(build_app(config))
    spammer, other = make_openids(2)
    for i, (openid, text) in enumerate([(spammer, "加 微 信 领红包"), (other, "刷单日结")]):
        assert (await client.post("/wechat", params=signed_query(),
                                  data=text_xml(openid, text, 500 + i))).status == 200
    await wait_for(lambda: spammer in fake_wechat.blacklist)
    assert (await sign_in(client)).status == 303
    pages = ["/admin", "/admin/decisions", "/admin/follower",
             f"/admin/follower?openid={spammer}", "/admin/queue", "/admin/rules",
             "/admin/reports"]
    secrets = [fake_wechat.secret, TOKEN, HASH, HASH.split("$")[-1]]
    for path in pages:
        response = await client.get(path)
        html = await response.text()
        assert response.status == 200, path
        assert '<html lang="zh-CN">' in html, path
        assert not [s for s in secrets if s in html], path
    overview = await (await client.get("/admin")).text()
    assert "今日消息" in overview and 'id="pushes">2<' in overview
    assert "<svg" in overview and "小时（Asia/Shanghai）" in overview
    log = await (await client.get(f"/admin/decisions?rule=contact-spam&openid={spammer}"))\
        .text()
    table = log.split('<table id="decisions">')[1]
    assert "contact-spam" in table and "加 微 信 领红包" in table and "keyword" in table
    assert table.count("<tr>") == 2  # the header and the one decision
    everyone = (await (await client.get("/admin/decisions?since=1h")).text()).split(
        '<table id="decisions">')[1]
    assert spammer in everyone and other not in everyone  # no rule fired for the other
    english = await (await client.get("/admin/decisions?lang=en")).text()
    assert '<html lang="en">' in english and "Evidence" in english
    remembered = await (await client.get("/admin/queue")).text()
    assert "Attempts" in remembered  # the choice is kept in a cookie
    back = await (await client.get("/admin/queue?lang=zh")).text()
    assert "尝试次数" in back


async def test_console_buttons_take_the_cli_paths(
        aiohttp_client: Any, tmp_path: Path, fake_wechat: FakeWeChat) -> None:
    config = console_config(tmp_path, fake_wechat)
    client = await aiohttp_client(build_app(config))
    spammer, bad = make_openids(2)
    assert (await client.post("/wechat", params=signed_query(),
                              data=text_xml(spammer, "加微信领红包", 900))).status == 200
    await wait_for(lambda: spammer in fake_wechat.blacklist)
    assert (await sign_in(client)).status == 303
    token = await csrf_of(client)
    # unblacklisting a follower a rule blacklisted: sent, and learnt as ham
    page = await client.post("/admin/follower/action", data={
        "csrf": token, "openid": spammer, "kind": "unblacklist", "reason": ""})
    assert page.status == 200 and "已加入发送队列：1" in await page.text()
    await wait_for(lambda: spammer not in fake_wechat.blacklist)
    with sqlite3.connect(tmp_path / "bot.db") as db:
        assert db.execute("SELECT label, source FROM samples WHERE openid = ?",
                          [spammer]).fetchall() == [("ham", "blacklist remove")]
        assert db.execute("SELECT source, rule_id FROM actions WHERE kind = 'unblacklist'"
                          ).fetchall() == [("cli", "cli")]
    # a failure (40003) shows with its explanation, and is dismissed by its button
    fake_wechat.invalid.add(bad)
    await client.post("/admin/follower/action", data={
        "csrf": token, "openid": bad, "kind": "blacklist", "duration": "7d"})
    await wait_for(lambda: "失败 1" in _sync_text(tmp_path))
    queue = await (await client.get("/admin/queue")).text()
    assert "40003" in queue and bad in queue
    (action_id,) = re.findall(r'name="id" value="(\d+)"', queue)
    page = await client.post("/admin/queue/dismiss", data={"csrf": token, "id": action_id})
    assert "已忽略：1" in await page.text()
    sent = len(fake_wechat.calls_to("batchblacklist"))
    page = await client.post("/admin/queue/retry", data={"csrf": token})
    assert "已重新排队：0" in await page.text()
    assert len(fake_wechat.calls_to("batchblacklist")) == sent
    # a 45009 pause, lifted by the Resume button
    fake_wechat.script("batchblacklist", errcode(45009))
    await client.post("/admin/follower/action", data={
        "csrf": token, "openid": spammer, "kind": "blacklist"})
    for _ in range(200):
        overview = await (await client.get("/admin")).text()
        if "发送已暂停" in overview:
            break
        await asyncio.sleep(0.05)  # polling the service's state
    assert "45009" in overview and "重置配额" in overview
    page = await client.post("/admin/queue/resume", data={"csrf": token})
    assert "已恢复发送" in await page.text()
    await wait_for(lambda: spammer in fake_wechat.blacklist)


def _sync_text(tmp_path: Path) -> str:
    with sqlite3.connect(tmp_path / "bot.db") as db:
        n = db.execute("SELECT COUNT(*) FROM actions WHERE status = 'failed'").fetchone()[0]
    return f"失败 {n}"


async def test_rules_page_tests_text_with_near_misses(aiohttp_client: Any,
                                                      tmp_path: Path) -> None:
    from bot.classifier.train import fit
    from bot.core.models import Sample
    from bot.storage.sqlite.samples import save_model
    from bot.storage.sqlite.store import run_sync
    from tests.learning_data import ham_texts, spam_texts

    config = console_config(tmp_path)
    model = fit([Sample(t, True) for t in spam_texts()]
                + [Sample(t, False) for t in ham_texts()], now=1_700_000_000)
    run_sync(tmp_path / "bot.db", lambda db: save_model(
        db, model.dumps(), trained_at=model.trained_at, samples=model.samples, source="test"))
    client = await aiohttp_client(build_app(config))
    assert (await sign_in(client)).status == 303
    token = await csrf_of(client, "/admin/rules")
    for _ in range(100):  # the service puts the stored model in force as it starts
        if f"{model.samples} 条样本" in await (await client.get("/admin/rules")).text():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the stored model never showed on the Rules page")
    page = await client.post("/admin/rules/test", data={"csrf": token, "text": "刷单日结",
                                                        "type": "text", "openid": ""})
    html = await page.text()
    assert page.status == 200 and "没有规则命中" in html and "near-misses" in html
    assert "✔ keywords" in html and "✘ contact" in html
    assert f'id="test-score">{model.score("刷单日结"):.3f}' in html
    page = await client.post("/admin/rules/test", data={"csrf": token, "text": "加微信",
                                                        "type": "text"})
    assert "contact-spam" in await page.text()
    # a broken file shows as file:line, the last good rules still listed
    (tmp_path / "rules" / "bad.yaml").write_text("rules:\n  - id: Bad Id\n    action: x\n",
                                                 encoding="utf-8")
    html = await (await client.get("/admin/rules")).text()
    assert "bad.yaml:2" in html and "contact-spam" in html


def test_every_label_used_exists_in_both_languages() -> None:
    from bot.web.admin.i18n import LABELS

    root = Path(__file__).resolve().parents[1] / "bot" / "web" / "admin"
    sources = [p.read_text("utf-8") for p in [*root.glob("templates/*.html"), root / "pages.py"]]
    used = {m for s in sources for m in re.findall(r"(?<![\w.])t\(['\"]([a-z0-9_]+)['\"]\)", s)}
    assert len(used) > 60
    assert sorted(used - set(LABELS)) == []
    assert all(zh and en for zh, en in LABELS.values())


def test_sessions_expire_and_the_limiter_forgets_after_its_window() -> None:
    from bot.web.admin.auth import LIMIT_WINDOW, LoginLimiter, Sessions
    from bot.web.admin.console import _safe_next

    now = [1000.0]
    sessions = Sessions(1.0, clock=lambda: now[0])
    session = sessions.create()
    assert sessions.get(session.token) is session and session.csrf != session.token
    now[0] += 3601
    assert sessions.get(session.token) is None
    limiter = LoginLimiter(2, clock=lambda: now[0])
    limiter.failed("10.0.0.1")
    assert limiter.wait("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.wait("10.0.0.1") > 0 and limiter.wait("10.0.0.2") == 0
    now[0] += LIMIT_WINDOW + 1
    assert limiter.wait("10.0.0.1") == 0
    for bad in ("https://evil.example/admin", "//evil.example", "/admin\\\\evil", "/elsewhere"):
        assert _safe_next(bad) == ""
    assert _safe_next("/admin/queue?x=1") == "/admin/queue?x=1"
