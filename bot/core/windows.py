"""Sliding time windows per key (flood counts, warn counts); time is always a parameter."""

from __future__ import annotations

from array import array
from bisect import bisect_right, insort
from collections import OrderedDict
from collections.abc import Iterable

DEFAULT_MAX_KEYS = 200_000


class SlidingWindows:
    """Exact event counts per key over sliding windows, in bounded memory.

    A key with one recent event costs one int; only keys with several events inside the
    horizon hold an ``array`` of timestamps, trimmed to the ``keep`` most recent (a rule
    only asks whether a count reached its threshold). Keys are kept in last-seen order:
    those idle for longer than the longest horizon are evicted as time moves on, and past
    ``max_keys`` the least recently seen go first, so a million distinct followers cost
    at most ``max_keys`` entries.

    Keys are stored as their hash: 64 bits make a collision among a million live
    followers vanishingly unlikely, and an int is half the memory of an OpenID string.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS):
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self.horizon = 0
        self._data: OrderedDict[int, int | array[int]] = OrderedDict()
        self._evicted_at: int | None = None

    def __len__(self) -> int:
        return len(self._data)

    def add(self, key: str, now: int, horizon: int, keep: int) -> None:
        """Record one event for ``key`` at ``now``; forget its events older than ``horizon``."""
        self.horizon = max(self.horizon, horizon)
        hkey = hash(key)
        data = self._data
        old = data.get(hkey)
        floor = now - horizon  # events at or before this are out of every window
        if old is None or (isinstance(old, int) and old <= floor):
            data[hkey] = now
        elif isinstance(old, int):
            data[hkey] = array("q", sorted((old, now))) if keep > 1 else max(old, now)
        else:
            del old[:bisect_right(old, floor)]
            insort(old, now)
            if len(old) > keep:
                del old[:len(old) - keep]
        data.move_to_end(hkey)
        if now != self._evicted_at or len(data) > self.max_keys:
            self._evict(now)  # once a second is enough for keys idle past the horizon

    def count(self, key: str, now: int, seconds: int) -> int:
        """Events recorded for ``key`` in ``(now - seconds, now]`` (this one included)."""
        value = self._data.get(hash(key))
        if value is None:
            return 0
        if isinstance(value, int):
            return int(now - seconds < value <= now)
        return bisect_right(value, now) - bisect_right(value, now - seconds)

    def reset(self, key: str) -> None:
        """Forget every event of ``key``."""
        self._data.pop(hash(key), None)

    def _evict(self, now: int) -> None:
        self._evicted_at = now
        data = self._data
        floor = now - self.horizon
        while data:
            oldest = next(iter(data))
            value = data[oldest]
            last = value if isinstance(value, int) else value[-1]
            if last > floor and len(data) <= self.max_keys:
                return
            data.popitem(last=False)


def standing_warnings(rows: Iterable[tuple[str, str, int]]) -> dict[str, list[int]]:
    """Per rule id, the times of the warnings still on a follower's ladder, from their
    ``(rule_id, action, at)`` decisions oldest first: a rule's blacklist clears its
    warnings before it, as the engine starts the ladder again after one."""
    warned: dict[str, list[int]] = {}
    for rule_id, action, at in rows:
        if action == "blacklist":
            warned.pop(rule_id, None)
        else:
            warned.setdefault(rule_id, []).append(int(at))
    return warned
