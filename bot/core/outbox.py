"""The outbox's decision rules as pure functions: what a new action does to the queue.

The last word wins: a follower's newest queued action absorbs a new one of its kind
and an opposite one never sent is cancelled; a permanent blacklist outranks a timed
one, and of two timed ones the later end wins. Storage backends read the follower's
rows, ask these functions, and write what they say; no backend decides on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.models import ActionKind

BLACKLISTED, REMOVED = "blacklisted", "removed"


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row claimed for sending."""

    id: int
    openid: str
    kind: str
    rule_id: str
    reason: str
    expires_at: int | None
    attempts: int


# The wall clock can step backwards (NTP correcting a fast clock, a VM restored). A row
# or pause stamped more than this many seconds after "now" was stamped before such a
# jump: how long its wait has already run is unknowable, so it counts as over (a retry
# or a quota check sent early is harmless; one delayed by the jump could be by hours).
CLOCK_SLACK = 2.0


@dataclass(frozen=True, slots=True)
class QueueState:
    """What a worker needs to decide whether to send: ready rows and the next deadlines."""

    ready: int
    oldest_created: float | None
    next_not_before: float | None
    paused_until: float
    paused_reason: str


@dataclass(frozen=True, slots=True)
class Queued:
    """One of a follower's actions still queued or in flight, oldest first."""

    id: int
    kind: str
    status: str
    attempts: int
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class EnqueuePlan:
    """What queueing one action does: cancel, absorb into a queued one, or insert.

    ``reset_end``: a cancelled unblacklist never went out, so the blacklist in force
    from now on is the new one, with the new one's end. ``absorb_into``: the queued
    action of the same kind that takes the new one in (``absorbed_end`` is its end from
    now on when ``extend`` is set). ``check_state``: nothing is queued, so the
    follower's recorded state decides whether the action is needless
    (:func:`against_state`) before it is inserted.
    """

    cancel: tuple[int, ...] = ()
    reset_end: bool = False
    absorb_into: int | None = None
    extend: bool = False
    absorbed_end: int | None = None
    check_state: bool = False

    @property
    def insert(self) -> bool:
        """True unless a queued action absorbs the new one."""
        return self.absorb_into is None


@dataclass(frozen=True, slots=True)
class StateCheck:
    """:func:`against_state`'s answer: skip the action, and the recorded end to set."""

    needless: bool
    set_end: bool = False
    end: int | None = None


def later_expiry(a: int | None, b: int | None) -> int | None:
    """The stronger of two blacklist ends: permanent (None) outranks every timed one,
    and of two timed ones the later end wins."""
    if a is None or b is None:
        return None
    return max(a, b)


def queued_status(dry_run: bool) -> str:
    """The status a new action is written with: a would-be one in dry-run."""
    return "dry_run" if dry_run else "pending"


def active_statuses(dry_run: bool) -> tuple[str, str]:
    """The statuses of a follower's rows that a new action is weighed against."""
    return (queued_status(dry_run), "dry_run" if dry_run else "sending")


def plan_enqueue(kind: ActionKind, expires_at: int | None, queued: Sequence[Queued], *,
                 dry_run: bool, source: str) -> EnqueuePlan:
    """Weigh a new action against the follower's queued ones (see :class:`EnqueuePlan`).

    Only the latest queued action matters: one of the same kind still waiting absorbs
    the new one; an opposite one never sent is cancelled. One that was sent, or may
    have been (attempts > 0, or in flight), is never cancelled: the new action queues
    behind it, so WeChat ends in the state decided last. With nothing queued, an admin
    from the CLI (``source="cli"``) is always sent; otherwise the state decides.
    """
    status = queued_status(dry_run)
    rest = list(queued)
    cancel: list[int] = []
    while rest and rest[-1].kind != kind and rest[-1].status == status and rest[-1].attempts == 0:
        cancel.append(rest.pop().id)
    reset = bool(cancel) and kind is ActionKind.BLACKLIST and not dry_run
    last = rest[-1] if rest else None
    if last is not None and last.kind == kind and last.status == status:
        extend = kind is ActionKind.BLACKLIST
        end = later_expiry(last.expires_at, expires_at) if extend else last.expires_at
        return EnqueuePlan(tuple(cancel), reset, absorb_into=last.id, extend=extend,
                           absorbed_end=end)
    return EnqueuePlan(tuple(cancel), reset,
                       check_state=not rest and not dry_run and source != "cli")


def against_state(state: tuple[str, int | None] | None, kind: ActionKind,
                  expires_at: int | None, *, cancelled_one: bool) -> StateCheck:
    """Whether the follower is already in the asked state through us (or never left it).

    ``state`` is the recorded ``(status, expires_at)``, None when never actioned. A
    blacklist asked again of a blacklisted follower extends its end instead (unless a
    cancelled unblacklist already set it).
    """
    if state is None:
        return StateCheck(cancelled_one)  # its opposite was cancelled before it was sent
    wanted = BLACKLISTED if kind is ActionKind.BLACKLIST else REMOVED
    if state[0] != wanted:
        return StateCheck(False)
    if kind is ActionKind.BLACKLIST and not cancelled_one:
        return StateCheck(True, set_end=True, end=later_expiry(state[1], expires_at))
    return StateCheck(True)


def settled_state(old: tuple[str, int, int | None] | None, kind: str, expires_at: int | None,
                  now: int) -> tuple[str, int, int | None]:
    """A follower's recorded ``(status, since, expires_at)`` once an action completes.

    ``since`` keeps the old start while the status stays; a blacklist completing while
    an earlier one is in force keeps the stronger end (a shorter one queued behind a
    longer one must not cut it short).
    """
    status = BLACKLISTED if kind == ActionKind.BLACKLIST else REMOVED
    end = expires_at if status == BLACKLISTED else None
    if old is None:
        return status, now, end
    since = old[1] if old[0] == status else now
    if old[0] == BLACKLISTED and status == BLACKLISTED:
        end = later_expiry(old[2], end)
    return status, since, end
