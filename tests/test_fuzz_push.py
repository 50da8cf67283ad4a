"""Fuzzed pushes, signed in plain and safe mode, over real HTTP to a real `bot serve` process.

Whatever the body holds (deep nesting, huge fields and attributes, invalid UTF-8, BOMs,
CDATA tricks, duplicate or missing fields, control characters, surrogates, garbage
ciphertext), the answer is 200, 400, 403 or 413 within 2 s, the server logs no
traceback, and its memory does not grow over the run.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wechatpy.crypto import PrpCrypto, WeChatCrypto

from bot.wechat.push import sign
from tests.hostile import ServerProcess, free_port, scaled, write_config
from tests.pushes import AES_KEY, APPID, TOKEN, text_xml

ANSWERS = {200, 400, 403, 413}
SLOW = 2.0
TALLY: Counter[str] = Counter()
FIELDS = ("ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event",
          "EventKey", "PicUrl", "MediaId", "Url", "Title", "Description", "Encrypt")
SPAM = ("加微信", "刷单兼职", "vx123456", "加 微 信", "ＶＸ：abc12345", "日赚500")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz-push")
    port = free_port()
    config = write_config(tmp / "config.yaml", port, tmp, synchronous="normal")
    proc = ServerProcess(config, port, tmp / "serve.log").start()
    try:
        for i in range(50):  # warm up: caches, SQLite pages, the allocator's arenas
            status, _ = post_plain(proc, text_xml(f"oWarm{i:023d}", SPAM[i % 6], i).encode())
            assert status == 200
        proc.baseline_rss = proc.rss_kb()
        yield proc
    finally:
        proc.stop()


# ---------------------------------------------------------------- strategies

_chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_nasty = st.sampled_from(["]]>", "<![CDATA[", "]]]]><![CDATA[>", "\ufeff", "\x00", "\x1b",
                          "\x7f", "\ud800", "\udfff", "&amp;", "&#0;", "&#xD800;", "&lt;",
                          "&bogus;", "<", ">", "\r\n", "\u202e", "\u200b", "𝟘", "²"])
_texts = st.lists(st.one_of(st.text(_chars, max_size=30), _nasty, st.sampled_from(SPAM)),
                  max_size=8).map("".join)
_huge = st.builds(lambda piece, n: piece * n, st.sampled_from(["a", "加", "<", "]]>", "\x01"]),
                  st.integers(1000, 70_000))
_tags = st.one_of(st.sampled_from(FIELDS), st.text(st.sampled_from("abcXYZ_:-.1é加"),
                                                   min_size=1, max_size=8))


@st.composite
def _value(draw: st.DrawFn) -> str:
    text = draw(st.one_of(_texts, _huge, st.integers(-2**70, 2**70).map(str),
                          st.sampled_from(["oFuzzFollower0000000000000001", "text", "event",
                                           "subscribe", "1700000000", "０１２", ""])))
    wrap = draw(st.sampled_from(["plain", "cdata", "cdata-split", "unterminated"]))
    if wrap == "cdata":
        return f"<![CDATA[{text}]]>"
    if wrap == "cdata-split":
        return f"<![CDATA[{text}]]><![CDATA[{text}]]>"
    if wrap == "unterminated":
        return f"<![CDATA[{text}"
    return text


@st.composite
def _element(draw: st.DrawFn) -> str:
    tag = draw(_tags)
    attrs = draw(st.sampled_from(["", ' a="1"', ' a="1" a="2"', " a='<'", " x"]))
    if draw(st.integers(0, 9)) == 0:
        attrs += f' big="{"x" * draw(st.integers(1000, 70_000))}"'
    value = draw(_value())
    depth = draw(st.sampled_from([0, 0, 0, 1, 5, 7, 100, 5000]))
    inner = "<n>" * depth + value + "</n>" * depth
    return f"<{tag}{attrs}>{inner}</{tag}>"


def _valid_fields(openid: str, now: int) -> list[str]:
    return ["<ToUserName><![CDATA[gh_fuzz]]></ToUserName>",
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>",
            f"<CreateTime>{now}</CreateTime>", "<MsgType><![CDATA[text]]></MsgType>",
            f"<MsgId>{now}</MsgId>"]


def _xml_text(text: str, cdata: bool) -> str:
    """``text`` as valid element content (control characters stay: XML forbids those)."""
    if cdata:
        return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    return text.replace("&", "&amp;").replace("<", "&lt;")


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> bytes:
    """Well-formed text and event pushes carrying any text: these reach rules and storage."""
    openid = draw(st.sampled_from(["oFuzzFollower0000000000000001", "oFuzzFollower0000000000002",
                                   "o" + "x" * 27]))
    now = int(time.time()) + draw(st.integers(-10**6, 10**6))
    kind = draw(st.sampled_from(["text", "text", "link", "image", "event", "location", "x"]))
    text = draw(st.one_of(_texts, _huge.map(lambda t: t[:20_000])))
    cdata = draw(st.booleans())
    parts = ["<ToUserName><![CDATA[gh_fuzz]]></ToUserName>",
             f"<FromUserName><![CDATA[{openid}]]></FromUserName>",
             f"<CreateTime>{now}</CreateTime>", f"<MsgType><![CDATA[{kind}]]></MsgType>"]
    if kind == "event":
        event = draw(st.sampled_from(["subscribe", "CLICK", text]))
        parts.append(f"<Event>{_xml_text(event, cdata)}</Event>"
                     f"<EventKey>{_xml_text(text, cdata)}</EventKey>")
    else:
        for tag in ("Content", "Title", "Description", "Url"):
            parts.append(f"<{tag}>{_xml_text(text, cdata)}</{tag}>")
        parts.append(f"<MsgId>{draw(st.integers(0, 2**64))}</MsgId>")
    prefix = draw(st.sampled_from(["", "", "\ufeff", '<?xml version="1.0" encoding="UTF-8"?>']))
    body = f"{prefix}<xml>{''.join(draw(st.permutations(parts)))}</xml>"
    return body.encode("utf-8", "surrogatepass")


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """Raw push bodies: push-shaped, with everything pushes should never hold."""
    openid = draw(st.sampled_from(["oFuzzFollower0000000000000001", "o" + "x" * 27, "",
                                   "o\u200bsp", "o" * 5000]))
    fields = _valid_fields(openid, draw(st.integers(1_600_000_000, 1_900_000_000)))
    keep = draw(st.lists(st.booleans(), min_size=len(fields), max_size=len(fields)))
    parts = [f for f, k in zip(fields, keep, strict=True) if k or draw(st.booleans())]
    parts += draw(st.lists(_element(), max_size=6))
    parts.append(f"<Content>{draw(_value())}</Content>")
    if draw(st.booleans()):  # duplicates
        parts += draw(st.lists(st.sampled_from(parts), max_size=3))
    parts = draw(st.permutations(parts))
    prefix = draw(st.sampled_from(["", "\ufeff", "\ufeff\ufeff", " \n", '<?xml version="1.0"?>',
                                   '<?xml version="1.0" encoding="gbk"?>',
                                   '<?xml version="1.0" encoding="utf-16"?>',
                                   "<!DOCTYPE xml [<!ENTITY a 'b'>]>", "<!-- c -->"]))
    root = draw(st.sampled_from(["xml", "xml", "xml", "XML", "root"]))
    text = f"{prefix}<{root}>{''.join(parts)}</{root}>"
    if draw(st.integers(0, 5)) == 0:
        text = text[:draw(st.integers(0, len(text)))]  # truncated
    body = text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8 bytes
    damage = draw(st.sampled_from(["none", "none", "bytes", "latin", "utf16"]))
    if damage == "bytes":
        where = draw(st.integers(0, max(0, len(body) - 1)))
        body = body[:where] + draw(st.binary(min_size=1, max_size=8)) + body[where + 1:]
    elif damage == "latin":
        body = text.encode("latin-1", "replace")
    elif damage == "utf16":
        body = text.encode("utf-16", "surrogatepass")
    return body


def push_bodies() -> st.SearchStrategy[bytes]:
    """Half near-valid pushes (rules, storage, replies), half hostile ones (the parser)."""
    return st.one_of(near_valid_bodies(), hostile_bodies())


# ---------------------------------------------------------------- sending


def post_plain(server: ServerProcess, body: bytes, *, signed: bool = True) -> tuple[int, bytes]:
    ts = str(int(time.time()))
    query = {"signature": sign(TOKEN, ts, "fz") if signed else "0" * 40,
             "timestamp": ts, "nonce": "fz"}
    return server.send("POST", f"/wechat?{urlencode(query)}", body)


def post_safe(server: ServerProcess, encrypt: str, envelope: str | None = None
              ) -> tuple[int, bytes]:
    ts = str(int(time.time()))
    query = {"signature": sign(TOKEN, ts, "fz"), "timestamp": ts, "nonce": "fz",
             "encrypt_type": "aes", "msg_signature": sign(TOKEN, ts, "fz", encrypt)}
    body = envelope if envelope is not None else (
        f"<xml><ToUserName><![CDATA[gh_fuzz]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
    return server.send("POST", f"/wechat?{urlencode(query)}",
                       body.encode("utf-8", "surrogatepass"))


def check(mode: str, send: tuple[float, tuple[int, bytes]]) -> None:
    elapsed, (status, answer) = send
    TALLY["inputs"] += 1
    TALLY[f"{mode} {status}"] += 1
    if status not in ANSWERS or elapsed > SLOW:
        TALLY["failures"] += 1
    assert status in ANSWERS, f"HTTP {status}: {answer[:300]!r}"
    assert elapsed < SLOW, f"answered in {elapsed:.2f} s"
    assert b"Traceback" not in answer


def timed(fn: object, *args: object) -> tuple[float, tuple[int, bytes]]:
    started = time.monotonic()
    result = fn(*args)  # type: ignore[operator]
    return time.monotonic() - started, result


_KEY = WeChatCrypto(TOKEN, AES_KEY, APPID).key


# ---------------------------------------------------------------- properties


@settings(max_examples=scaled(80))
@given(body=push_bodies())
def test_fuzzed_plain_pushes_are_answered_never_with_a_server_error(
        server: ServerProcess, body: bytes) -> None:
    check("plain", timed(post_plain, server, body))


@settings(max_examples=scaled(20))
@given(body=push_bodies())
def test_fuzzed_unsigned_pushes_are_refused(server: ServerProcess, body: bytes) -> None:
    elapsed, (status, answer) = timed(lambda: post_plain(server, body, signed=False))
    check("unsigned", (elapsed, (status, answer)))
    assert status in (403, 413) or (status == 400 and not body)


@settings(max_examples=scaled(40))
@given(body=push_bodies(), appid=st.sampled_from([APPID, APPID, "wxother", ""]))
def test_fuzzed_safe_mode_pushes_are_answered_never_with_a_server_error(
        server: ServerProcess, body: bytes, appid: str) -> None:
    # The plaintext is whatever bytes were drawn, encrypted as the platform does.
    encrypt = PrpCrypto(_KEY).encrypt(body, appid).decode()
    check("safe", timed(post_safe, server, encrypt))


_b64ish = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789+/=\n !é]>"), max_size=400)


@settings(max_examples=scaled(40))
@given(encrypt=st.one_of(
    _b64ish,
    st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
    st.builds(lambda n: base64.b64encode(bytes(range(256)) * n).decode(), st.integers(0, 150)),
    st.binary(min_size=16, max_size=96).map(  # decrypts to garbage under the right key
        lambda b: base64.b64encode(b[: len(b) // 16 * 16]).decode())),
    envelope=st.sampled_from([None, "<xml><Encrypt></Encrypt></xml>",
                              "<xml><Encrypt>a</Encrypt><Encrypt>b</Encrypt></xml>",
                              "<xml><Encrypt><Encrypt>a</Encrypt></Encrypt></xml>",
                              "\ufeff<xml><Encrypt><![CDATA[", "<xml/>", ""]))
def test_fuzzed_ciphertexts_are_refused_cleanly(server: ServerProcess, encrypt: str,
                                               envelope: str | None) -> None:
    check("ciphertext", timed(post_safe, server, encrypt, envelope))


def test_after_the_fuzzing_no_traceback_and_no_memory_growth(server: ServerProcess) -> None:
    # Runs after the properties above (pytest keeps the file's order).
    status, answer = post_plain(server, text_xml("oAfterFuzz000000000000000001", "你好",
                                                 99).encode())
    assert status == 200 and answer == b"success", "the server still serves real pushes"
    log = server.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    growth_mb = (server.rss_kb() - server.baseline_rss) / 1024
    print(f"\nfuzzed pushes: {dict(TALLY)}; server RSS growth {growth_mb:+.1f} MB")
    assert growth_mb < 40, f"server RSS grew {growth_mb:.1f} MB over the fuzzing"
