"""Domain types shared by the webhook, the rule engine, the store and the batcher."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

# WeChat OpenIDs are 28 characters of [A-Za-z0-9_-] for an Official Account; be a little
# lenient on length (other account kinds and test fixtures) but never accept separators.
OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")

MESSAGE_TYPES = ("text", "image", "voice", "video", "shortvideo", "location", "link")

# Which follower-written fields the rules see, by message type: (XML tag, text name).
# The one source for the push parser and for `rules test`: a type absent here (image,
# video, every event) carries no text the rules can match.
TEXT_FIELDS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "text": (("Content", "content"),),
    "link": (("Title", "title"), ("Description", "description"), ("Url", "url")),
    "location": (("Label", "label"),),
    "voice": (("Recognition", "recognition"),),
}


def text_field(msg_type: str) -> str | None:
    """The name under which a push of ``msg_type`` carries its (first) follower text."""
    fields = TEXT_FIELDS.get(msg_type)
    return fields[0][1] if fields else None


def is_valid_openid(openid: str) -> bool:
    """True when ``openid`` has the shape of a WeChat OpenID."""
    return bool(OPENID_RE.match(openid))


class ActionKind(StrEnum):
    """What a decision asks the WeChat API (or the recorder) to do."""

    BLACKLIST = "blacklist"
    UNBLACKLIST = "unblacklist"
    WARN = "warn"
    LOG = "log"


@dataclass(frozen=True, slots=True)
class Event:
    """One push from WeChat, message or event, reduced to what moderation needs.

    ``msg_type`` is WeChat's MsgType (``text``, ``image``, ..., ``event``, or whatever
    unknown type WeChat sent); ``event`` is the lower-cased Event for ``msg_type ==
    "event"``. ``texts`` maps a field name (``content``, ``title``, ``description``,
    ``url``, ``label``, ``recognition``: see ``TEXT_FIELDS``) to the follower-written
    text the rules match against. ``fields`` keeps every top-level XML field as received.
    """

    openid: str
    account: str
    create_time: int
    msg_type: str
    event: str | None = None
    msg_id: str | None = None
    texts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def dedup_key(self) -> str:
        """Key WeChat's retries share: MsgId for messages, sender + CreateTime for events."""
        # A true retry repeats every field; the extra parts keep distinct pushes that
        # happen to share a MsgId or a second (two events in one second) apart.
        # The stored keys' unique index should grow at its end, as the pushes arrive:
        # CreateTime leads, then a message's MsgId (WeChat's ids grow with time, across
        # followers), then the OpenID. Each key that lands elsewhere costs its group
        # commit one more index page written to the WAL: led by the OpenID, every key
        # did (32 against 17 us of writer CPU a push); with the OpenID before the MsgId,
        # every key of a busy second did (raw record_pushes, 20-push commits: 40 against
        # 17 WAL pages). Keys stored before a change of order keep theirs: a retry that
        # straddles the upgrade's restart is the only one the store would not recognise.
        if self.msg_id:
            return f"m:{self.create_time}:{self.msg_id}:{self.openid}:{self.msg_type}"
        key = self.fields.get("EventKey", "")
        return f"e:{self.create_time}:{self.openid}:{self.event or self.msg_type}:{key}"

    @property
    def kind(self) -> str:
        """Rule-facing type: the message type, or ``event`` for every event."""
        return self.msg_type


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One rule that fired, with the evidence that makes ``why`` answerable.

    ``evidence`` is human-readable (``keyword '加微信' at 3-8: "加 微 信"``); ``field`` and
    ``span`` locate the original text the follower wrote, when there is one.
    """

    rule_id: str
    action: ActionKind
    evidence: str
    field: str | None = None
    span: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """An API action decided for a follower: blacklist or unblacklist.

    ``expires_at`` (unix seconds) on a blacklist schedules its automatic removal.
    """

    kind: ActionKind
    openid: str
    rule_id: str
    reason: str = ""
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine concluded about one event: every hit, the actions and a reply."""

    hits: tuple[RuleHit, ...] = ()
    actions: tuple[Action, ...] = ()
    reply: str | None = None

    @property
    def empty(self) -> bool:
        """True when no rule fired."""
        return not self.hits


NO_DECISION = Decision()


@dataclass(frozen=True, slots=True)
class Recorded:
    """Result of recording a push: its row id, or ``duplicate`` for a WeChat retry."""

    event_id: int | None
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled text the classifier learns from."""

    text: str
    spam: bool
