"""The one error tree: every error carries what the caller needs to decide what to do."""

from __future__ import annotations

import reprlib


# How a wrong value is quoted in an error message: a few levels, a few items, short
# strings. A YAML alias bomb builds a value of millions of items from a few lines;
# its full repr would take seconds and megabytes to build and drown the message.
class _Bounded(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 2, 80, 80
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 5

    def repr1(self, x: object, level: int) -> str:
        # reprlib picks a method by the exact type's name: a list or dict subclass (the
        # rule loader's line-tracking ones) would get the builtin, unbounded repr.
        if isinstance(x, dict):
            return self.repr_dict(x, level)
        if isinstance(x, list):
            return self.repr_list(x, level)
        return super().repr1(x, level)


_SHOWN = _Bounded()


def shown(value: object) -> str:
    """A bounded repr of ``value`` for an error message (cost independent of its size)."""
    return _SHOWN.repr(value)


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
        super().__init__(f"WeChat API {describe_error(errcode, errmsg)}")


def describe_error(errcode: int | None, errmsg: str) -> str:
    """An API failure for a log line: ``errcode 45009 (api freq out of limit)``, or for
    an answer with no errcode (HTTP 503, a timeout) what happened: ``HTTP 503``."""
    if errcode is None:
        return errmsg or "failed with no errcode"
    return f"errcode {errcode} ({errmsg})" if errmsg else f"errcode {errcode}"


# ---------------------------------------------------------------- WeChat API errors

EXPLANATIONS = {
    -1: "WeChat was busy; the call is retried with backoff.",
    40003: "An OpenID in the batch is not a valid OpenID.",
    40013: "The AppID is wrong: check wechat.appid.",
    40125: "The AppSecret is wrong: check wechat.secret (it may have been reset).",
    40164: "This server's IP address is not on the account's API IP allowlist: add it on "
           "the platform (Settings > Basic configuration > IP allowlist).",
    40032: "More than 20 OpenIDs in one call; the batch is split.",
    45009: "The account has used up today's quota for this API. Sending is paused and "
           "everything stays queued; it is tried again at the time shown (within the hour, "
           "in case an admin clears the quota on the platform; WeChat resets it at "
           "midnight Beijing time, 00:00 +08:00).",
    45011: "The per-minute quota for this API is used up; sending waits for the next minute.",
    48001: "The account is not authorised for this API: only verified (认证) Official "
           "Accounts may blacklist followers. Verify the account, then run "
           "`blacklist retry`.",
    49003: "The OpenID does not belong to this Official Account (another AppID's follower).",
}


def explain(errcode: int | None) -> str:
    """A plain explanation of an errcode for operators (empty when we have none)."""
    return EXPLANATIONS.get(errcode, "") if errcode is not None else ""


class APIError(WeChatAPIError):
    """Base of the client's errors; ``explanation`` is the plain text for operators."""

    @property
    def explanation(self) -> str:
        """What this error means and what happens next, in plain words."""
        if self.errcode is None and self.http_status:
            return f"WeChat answered HTTP {self.http_status}."
        return explain(self.errcode)


class RetryableError(APIError):
    """Transient: -1, HTTP 5xx, connection errors and timeouts. Retry with backoff."""


class QuotaError(APIError):
    """A quota is used up; ``scope`` is ``daily`` (45009) or ``minute`` (45011)."""

    def __init__(self, errcode: int, errmsg: str, *, scope: str):
        super().__init__(errcode, errmsg)
        self.scope = scope


class TokenError(APIError):
    """The access token was refused (40001/40014/42001) even after one renewal."""


class CredentialError(APIError):
    """No token can be had: AppID/AppSecret wrong or this IP not allowed."""


class InvalidOpenIDError(APIError):
    """40003/49003: some OpenID in the batch was refused, the whole batch with it."""


class BatchTooLargeError(APIError):
    """40032: too many OpenIDs in one call."""


class FatalAPIError(APIError):
    """Final for the request: 48001 (not authorised) and every other errcode."""
