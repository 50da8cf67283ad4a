"""Sliding windows: exact counts at the boundaries, expiry, bounded memory."""

from __future__ import annotations

from bot.core.windows import SlidingWindows


def test_exactly_n_in_window_counts_this_one_included() -> None:
    windows = SlidingWindows()
    for t in range(100, 110):  # 10 messages at t=100..109
        windows.add("u", t, horizon=10, keep=20)
    assert windows.count("u", 109, 10) == 10
    # window is (now - seconds, now]: at t=110 the message of t=100 has left it
    assert windows.count("u", 110, 10) == 9


def test_n_minus_one_and_expiry() -> None:
    windows = SlidingWindows()
    for t in (0, 1, 2):
        windows.add("u", t, horizon=60, keep=10)
    assert windows.count("u", 2, 60) == 3
    assert windows.count("u", 59, 60) == 3
    assert windows.count("u", 60, 60) == 2
    assert windows.count("u", 62, 60) == 0
    windows.add("u", 200, horizon=60, keep=10)  # old ones are pruned on the next add
    assert windows.count("u", 200, 60) == 1


def test_out_of_order_times_are_counted_exactly() -> None:
    windows = SlidingWindows()
    for t in (10, 5, 8):
        windows.add("u", t, horizon=60, keep=10)
    assert windows.count("u", 10, 3) == 2  # 8 and 10 within (7, 10]
    assert windows.count("u", 10, 60) == 3


def test_keep_bounds_the_timestamps_per_key() -> None:
    windows = SlidingWindows()
    for t in range(1000):
        windows.add("u", t // 100, horizon=3600, keep=5)
    assert windows.count("u", 9, 3600) == 5


def test_keys_are_independent_and_reset() -> None:
    windows = SlidingWindows()
    windows.add("a", 1, horizon=60, keep=5)
    windows.add("b", 1, horizon=60, keep=5)
    windows.add("b", 2, horizon=60, keep=5)
    assert (windows.count("a", 2, 60), windows.count("b", 2, 60)) == (1, 2)
    windows.reset("b")
    assert windows.count("b", 2, 60) == 0


def test_idle_keys_are_evicted_as_time_moves_on() -> None:
    windows = SlidingWindows()
    for i in range(1000):
        windows.add(f"user{i}", 0, horizon=60, keep=5)
    assert len(windows) == 1000
    windows.add("late", 61, horizon=60, keep=5)
    assert len(windows) == 1


def test_a_million_followers_stay_within_max_keys() -> None:
    windows = SlidingWindows(max_keys=10_000)
    for i in range(1_000_000):
        windows.add(f"o{i}", i // 1000, horizon=3600, keep=2)
    assert len(windows) == 10_000
    assert windows.count("o999999", 999, 3600) == 1
    assert windows.count("o0", 999, 3600) == 0  # evicted, least recently seen
