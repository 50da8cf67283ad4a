"""Builders for signed and encrypted pushes, as the WeChat platform sends them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from wechatpy.crypto import WeChatCrypto

from bot.wechat.push import sign

TOKEN = "pushtoken123"
APPID = "wx1234567890abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OLD_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
# The shared vectors beside the repository when present, else the copy kept in tests/.
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "wechat-push-samples.json"
SAMPLES_FILE = _SHARED if _SHARED.exists() else (
    Path(__file__).resolve().parent / "vectors" / "wechat-push-samples.json")


def load_samples() -> list[dict[str, Any]]:
    """The 46 documented push shapes (shared/vectors), placeholders left in."""
    return json.loads(SAMPLES_FILE.read_text(encoding="utf-8"))


def with_openid(xml: str, openid: str) -> str:
    """Put a real OpenID where the docs' samples have FromUser/fromUser."""
    for placeholder in ("FromUser", "fromUser"):
        xml = xml.replace(f"<![CDATA[{placeholder}]]>", f"<![CDATA[{openid}]]>")
    return xml


def text_xml(openid: str, content: str, msg_id: int, create_time: int | str | None = None) -> str:
    """A plain text message push body."""
    return (
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def signed_query(token: str = TOKEN, timestamp: int | None = None, nonce: str = "nonce42",
                 **extra: str) -> dict[str, str]:
    """Query string of a plain-mode push (or a URL check with ``echostr`` in extra)."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    return {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce, **extra}


def encrypted(xml: str, *, key: str = AES_KEY, token: str = TOKEN, appid: str = APPID,
              timestamp: int | None = None, nonce: str = "nonce42") -> tuple[dict[str, str], str]:
    """(query, body) of a safe-mode push of ``xml`` encrypted under ``key``."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    envelope = WeChatCrypto(token, key, appid).encrypt_message(xml, nonce, ts)
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]></Encrypt>")[0]
    body = ("<xml><ToUserName><![CDATA[gh_test]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
    query = {
        "signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce,
        "encrypt_type": "aes", "msg_signature": sign(token, ts, nonce, encrypt),
    }
    return query, body


def decrypt_reply(xml: str, *, key: str = AES_KEY) -> str:
    """Open an encrypted passive reply the way the platform would."""
    from wechatpy.crypto import PrpCrypto

    encrypt = xml.split("<Encrypt><![CDATA[")[1].split("]]></Encrypt>", maxsplit=1)[0]
    plain = PrpCrypto(WeChatCrypto(TOKEN, key, APPID).key).decrypt(encrypt, APPID)
    return plain.decode() if isinstance(plain, bytes) else plain


# Rules the webhook tests push against: a blacklisting keyword and one with a reply.
RULES = """
rules:
  - id: contact-spam
    keywords: [加微信]
    action: blacklist
  - id: greeting-reply
    keywords: [你好机器人]
    action: log
    reply: 您好，已收到
"""
