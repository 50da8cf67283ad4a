"""The outbox's decision rules as pure functions: no SQLite, no store, no clock."""

from __future__ import annotations

import pytest

from bot.core.models import ActionKind
from bot.core.outbox import (
    EnqueuePlan,
    Queued,
    StateCheck,
    against_state,
    later_expiry,
    plan_enqueue,
    settled_state,
)

BL, UN = ActionKind.BLACKLIST, ActionKind.UNBLACKLIST


@pytest.mark.parametrize(("a", "b", "expected"), [
    (None, None, None), (None, 500, None), (500, None, None),  # permanent outranks timed
    (500, 900, 900), (900, 500, 900), (700, 700, 700),          # the later end wins
], ids=["both-permanent", "stored-permanent", "asked-permanent", "later-asked",
        "later-stored", "equal"])
def test_later_expiry(a: int | None, b: int | None, expected: int | None) -> None:
    assert later_expiry(a, b) == expected


def test_nothing_queued_rule_action_checks_the_state() -> None:
    assert plan_enqueue(BL, None, [], dry_run=False, source="rule") == EnqueuePlan(
        check_state=True)


def test_nothing_queued_admin_action_is_always_inserted() -> None:
    plan = plan_enqueue(BL, None, [], dry_run=False, source="cli")
    assert plan.insert and not plan.check_state and not plan.cancel


def test_same_kind_waiting_absorbs_and_keeps_the_stronger_end() -> None:
    queued = [Queued(7, "blacklist", "pending", 0, 900)]
    plan = plan_enqueue(BL, 500, queued, dry_run=False, source="rule")
    assert (plan.absorb_into, plan.extend, plan.absorbed_end, plan.insert) == (7, True, 900,
                                                                               False)
    permanent = plan_enqueue(BL, None, queued, dry_run=False, source="rule")
    assert permanent.absorbed_end is None  # a permanent blacklist makes it permanent


def test_same_kind_unblacklist_absorbs_without_touching_an_end() -> None:
    plan = plan_enqueue(UN, None, [Queued(3, "unblacklist", "pending", 0)], dry_run=False,
                        source="rule")
    assert plan.absorb_into == 3 and not plan.extend


def test_latest_word_wins_an_unsent_opposite_is_cancelled() -> None:
    queued = [Queued(1, "blacklist", "pending", 0), Queued(2, "unblacklist", "pending", 0)]
    plan = plan_enqueue(BL, 800, queued, dry_run=False, source="rule")
    # The unblacklist never went out; the earlier blacklist still waiting absorbs this one.
    assert plan.cancel == (2,) and plan.reset_end and plan.absorb_into == 1


def test_an_action_sent_or_maybe_sent_is_never_cancelled() -> None:
    for row in (Queued(1, "unblacklist", "sending", 1), Queued(1, "unblacklist", "pending", 1)):
        plan = plan_enqueue(BL, None, [row], dry_run=False, source="rule")
        assert plan.cancel == () and plan.insert and not plan.check_state  # queues behind


def test_cancelling_an_unsent_opposite_then_inserting_checks_the_state() -> None:
    plan = plan_enqueue(UN, None, [Queued(4, "blacklist", "pending", 0)], dry_run=False,
                        source="expiry")
    assert plan.cancel == (4,) and not plan.reset_end and plan.check_state


def test_dry_run_weighs_only_would_be_rows_and_never_checks_the_state() -> None:
    queued = [Queued(1, "blacklist", "dry_run", 0, 100)]
    plan = plan_enqueue(UN, None, queued, dry_run=True, source="rule")
    assert plan.cancel == (1,) and not plan.reset_end and not plan.check_state


@pytest.mark.parametrize(("state", "kind", "asked", "cancelled", "expected"), [
    (None, BL, None, False, StateCheck(False)),
    (None, UN, None, True, StateCheck(True)),  # its opposite never went out
    (("removed", None), BL, None, False, StateCheck(False)),
    (("removed", None), UN, None, False, StateCheck(True)),
    (("blacklisted", 500), BL, 900, False, StateCheck(True, set_end=True, end=900)),
    (("blacklisted", 500), BL, None, False, StateCheck(True, set_end=True, end=None)),
    (("blacklisted", None), BL, 900, False, StateCheck(True, set_end=True, end=None)),
    (("blacklisted", 500), BL, 900, True, StateCheck(True)),  # the cancel set the end
], ids=["never-blacklist", "never-after-cancel", "removed-blacklist", "removed-again",
        "extends-timed", "becomes-permanent", "stays-permanent", "end-already-set"])
def test_against_state(state: tuple[str, int | None] | None, kind: ActionKind,
                       asked: int | None, cancelled: bool, expected: StateCheck) -> None:
    assert against_state(state, kind, asked, cancelled_one=cancelled) == expected


@pytest.mark.parametrize(("old", "kind", "asked", "expected"), [
    (None, "blacklist", 900, ("blacklisted", 50, 900)),
    (None, "unblacklist", None, ("removed", 50, None)),
    (("blacklisted", 10, None), "blacklist", 900, ("blacklisted", 10, None)),
    (("blacklisted", 10, 2000), "blacklist", 900, ("blacklisted", 10, 2000)),
    (("blacklisted", 10, 500), "blacklist", 900, ("blacklisted", 10, 900)),
    (("removed", 10, None), "blacklist", 900, ("blacklisted", 50, 900)),
    (("blacklisted", 10, 500), "unblacklist", None, ("removed", 50, None)),
], ids=["first", "first-removal", "permanent-stays", "longer-stays", "later-end",
        "again-after-removal", "removed"])
def test_settled_state(old: tuple[str, int, int | None] | None, kind: str, asked: int | None,
                       expected: tuple[str, int, int | None]) -> None:
    assert settled_state(old, kind, asked, now=50) == expected
