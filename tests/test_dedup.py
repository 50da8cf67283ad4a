"""Retry memory: kept by age (WeChat retries for ~15 s), bounded in size."""

from __future__ import annotations

from bot.core.models import Event
from bot.web.retries import InMemoryRecentPushes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_answers_are_kept_for_the_retry_window_then_forgotten() -> None:
    clock = Clock()
    recent = InMemoryRecentPushes(keep_seconds=30, clock=clock)
    assert recent.claim("m:1") is None
    recent.finish("m:1", "success", "text/plain")
    for _ in range(50_000):  # a burst of other pushes does not push it out
        clock.now += 0.0005
        recent.claim(f"m:other{clock.now}")
    earlier = recent.claim("m:1")
    assert earlier is not None and earlier.result() == ("success", "text/plain")
    clock.now += 31
    assert recent.claim("m:1") is None, "past the retry window a key is new again"
    assert len(recent) == 1


async def test_size_is_bounded_and_forget_frees_a_key() -> None:
    clock = Clock()
    recent = InMemoryRecentPushes(keep_seconds=30, max_entries=100, clock=clock)
    for index in range(1000):
        recent.claim(f"m:{index}")
    assert len(recent) <= 101
    recent.forget("m:999")
    assert recent.claim("m:999") is None


def test_stored_keys_grow_with_time_then_msgid_whoever_sent_them() -> None:
    # The unique index on them then grows at its end: one page a group commit, not one
    # page a push (followers' messages within one second come in MsgId order).
    arrivals = [(1700000000, "oZed", "24000000000000001"),
                (1700000000, "oAmy", "24000000000000002"),
                (1700000000, "oMax", "24000000000000003"),
                (1700000001, "oAbe", "24000000000000004")]
    keys = [Event(openid, "gh", at, "text", msg_id=msg_id).dedup_key
            for at, openid, msg_id in arrivals]
    assert sorted(keys) == keys
    assert len(set(keys)) == len(keys)
