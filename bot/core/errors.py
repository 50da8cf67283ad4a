"""Error hierarchy: every error carries what the caller needs to decide what to do."""

from __future__ import annotations


class BotError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(BotError):
    """Invalid configuration; the message names the key and what was expected."""


class RuleError(BotError):
    """Invalid rule file; ``errors`` lists ``file:line: message`` strings."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class PushError(BotError):
    """A push that must be refused; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class WeChatAPIError(BotError):
    """The WeChat API answered a non-zero errcode (or the transport failed: errcode None)."""

    def __init__(self, errcode: int | None, errmsg: str, *, http_status: int | None = None):
        self.errcode = errcode
        self.errmsg = errmsg
        self.http_status = http_status
        super().__init__(f"WeChat API error {errcode}: {errmsg}")
