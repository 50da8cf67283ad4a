"""Push protocol: signature checks, safe-mode decryption, safe XML parsing into an Event."""

from __future__ import annotations

import hmac
import logging
import re
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import TextReply
from wechatpy.utils import WeChatSigner

from bot.core.errors import PushError
from bot.core.models import TEXT_FIELDS, Event

log = logging.getLogger(__name__)

# Entity declarations live in a DOCTYPE; refusing both before any parser runs closes
# XXE and billion-laughs whatever the parser's own defences are.
_FORBIDDEN_XML = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def sign(*parts: str) -> str:
    """WeChat's SHA1 signature over the sorted parts (wechatpy's signer)."""
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def _is_timestamp(text: str) -> bool:
    # ASCII digits only ('²'.isdigit() holds), and at most 10 of them: Unix seconds
    # until 2286, and always an SQLite integer.
    return 0 < len(text) <= 10 and text.isascii() and text.isdigit()


class PushCodec:
    """Verifies, decrypts and seals pushes for one Official Account.

    ``aes_keys`` lists the current EncodingAESKey first and, during a rotation, the
    previous one: a push that does not decrypt under the first is tried with the next.
    """

    def __init__(self, token: str, appid: str, aes_keys: list[str], tolerance: int = 300):
        self.token = token
        self.appid = appid
        self.tolerance = tolerance
        self._ciphers = [WeChatCrypto(token, key, appid) for key in aes_keys if key]

    def check_signature(self, query: Mapping[str, str], *extra: str, name: str = "signature",
                        now: float | None = None) -> None:
        """Raise PushError(403) unless ``query[name]`` signs token+timestamp+nonce(+extra)."""
        if not self.token:
            raise PushError(403, "wechat.token is not configured: pushes cannot be verified")
        given = query.get(name, "")
        timestamp = query.get("timestamp", "")
        nonce = query.get("nonce", "")
        if not given or not _is_timestamp(timestamp) or not nonce:
            raise PushError(403, f"missing or malformed {name}/timestamp/nonce")
        expected = sign(self.token, timestamp, nonce, *extra)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise PushError(403, f"bad {name}")
        now = time.time() if now is None else now
        if abs(now - int(timestamp)) > self.tolerance:
            raise PushError(403, "timestamp too far from now (replayed or clock skew)")

    def open(self, query: Mapping[str, str], body: bytes, now: float | None = None
             ) -> tuple[bytes, int | None]:
        """Verify a push; return its plaintext XML and which key decrypted it (None: plain)."""
        if query.get("encrypt_type", "raw").lower() != "aes":
            self.check_signature(query, now=now)
            return body, None
        if not self._ciphers:
            raise PushError(400, "encrypted push but wechat.encoding_aes_key is not configured")
        encrypted = _text_field(parse_xml(body), "Encrypt")
        if not encrypted:
            raise PushError(400, "encrypted push without an Encrypt element")
        self.check_signature(query, encrypted, name="msg_signature", now=now)
        return self._decrypt(encrypted)

    def _decrypt(self, encrypted: str) -> tuple[bytes, int]:
        for index, cipher in enumerate(self._ciphers):
            try:
                plain = PrpCrypto(cipher.key).decrypt(encrypted, self.appid)
            except (InvalidAppIdException, ValueError, struct.error, IndexError):
                continue
            if index:
                log.info("push decrypted with wechat.previous_encoding_aes_key")
            return (plain if isinstance(plain, bytes) else str(plain).encode("utf-8")), index
        raise PushError(400, "encrypted push does not decrypt with the configured key(s)")

    def reply(self, event: Event, content: str, key_index: int | None, nonce: str) -> str:
        """A passive text reply to ``event``, encrypted under the key its push came in."""
        xml = TextReply(source=event.account, target=event.openid, content=content).render()
        if key_index is None:
            return str(xml)
        cipher = self._ciphers[key_index]
        return str(cipher.encrypt_message(xml, nonce, str(int(time.time()))))


def parse_xml(body: bytes) -> ET.Element:
    """Parse a push body, refusing DOCTYPE/entities before the parser sees them.

    WeChat sends UTF-8. The parser is told so, which overrides any encoding the
    document declares; a NUL byte (which no UTF-8 XML holds, and every UTF-16 or
    UTF-32 body does) is refused first, because the parser would honour such a
    body's byte order and read a DOCTYPE the byte-level check cannot see.
    """
    if b"\x00" in body:
        raise PushError(400, "XML must be UTF-8 (the body holds NUL bytes)")
    if _FORBIDDEN_XML.search(body):
        raise PushError(400, "XML with a DOCTYPE or entity declaration is refused")
    parser = ET.XMLParser(encoding="utf-8")
    try:
        parser.feed(body)
        root = parser.close()
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise PushError(400, f"malformed XML: {exc}") from None
    if root.tag != "xml":
        raise PushError(400, f"unexpected root element <{root.tag}>")
    return root


def _text_field(root: ET.Element, name: str) -> str:
    node = root.find(name)
    return (node.text or "").strip() if node is not None else ""


# Documented pushes nest three levels at most (CopyrightCheckResult.ResultList.item).
MAX_DEPTH = 6


def flatten(root: ET.Element) -> dict[str, str]:
    """Every field of a push as ``Name`` or ``Parent.Child`` (``item[1]`` for repeats)."""
    out: dict[str, str] = {}
    for child in root:  # the hot path: pushes are flat but for a few event kinds
        if len(child):
            _walk(child, child.tag + ".", out, 2)
        else:
            out[child.tag] = child.text or ""
    return out


def _walk(node: ET.Element, prefix: str, out: dict[str, str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PushError(400, f"XML nested deeper than {MAX_DEPTH} levels")
    seen: dict[str, int] = {}
    for child in node:
        count = seen[child.tag] = seen.get(child.tag, -1) + 1
        key = prefix + child.tag + (f"[{count}]" if count else "")
        if len(child):
            _walk(child, key + ".", out, depth + 1)
        else:
            out[key] = child.text or ""


def parse_event(plain_xml: bytes) -> Event:
    """Turn a (decrypted) push into an :class:`Event`; PushError(400) if it is not one."""
    fields = flatten(parse_xml(plain_xml))
    openid = fields.get("FromUserName", "").strip()
    msg_type = fields.get("MsgType", "").strip().lower()
    create_time = fields.get("CreateTime", "").strip()
    if not openid or not msg_type or not _is_timestamp(create_time):
        raise PushError(400, "push lacks FromUserName, MsgType or a numeric CreateTime")
    is_event = msg_type == "event" or msg_type.startswith("device_")
    texts = {name: fields[tag] for tag, name in TEXT_FIELDS.get(msg_type, ()) if fields.get(tag)}
    return Event(
        openid=openid,
        account=fields.get("ToUserName", "").strip(),
        create_time=int(create_time),
        msg_type=msg_type,
        event=(fields.get("Event") or msg_type).strip().lower() if is_event else None,
        msg_id=None if is_event else (fields.get("MsgId") or "").strip() or None,
        texts=texts,
        fields=fields,
    )
