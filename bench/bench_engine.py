"""Rule engine throughput (100 / 10k / 100k keywords + 100 regexes) and flood memory."""

from __future__ import annotations

import random
import sys
import time
import tracemalloc
from pathlib import Path
from types import MappingProxyType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core.models import ActionKind, Event  # noqa: E402
from bot.core.windows import SlidingWindows  # noqa: E402
from bot.rules import RuleEngine, RuleSet, RuleSpec  # noqa: E402
from bot.rules.schema import FloodSpec  # noqa: E402

RNG = random.Random(42)
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
EVENTS = 3000


def words(n: int) -> list[str]:
    return ["".join(RNG.choices(CJK, k=RNG.randint(3, 6))) for _ in range(n)]


def ruleset(keywords: int) -> RuleSet:
    kws = words(keywords)
    specs = [RuleSpec(id=f"kw{i}", file="bench", line=1, action=ActionKind.LOG,
                      keywords=tuple(kws[i::10])) for i in range(10)]
    specs += [RuleSpec(id=f"re{i}", file="bench", line=1, action=ActionKind.LOG,
                       regex=(f"{CJK[i]}[a-z]{{2}}\\d{{{3 + i % 5},}}",)) for i in range(100)]
    specs.append(RuleSpec(id="contact", file="bench", line=1, action=ActionKind.WARN,
                          contact=("wechat_id", "qq", "phone", "url")))
    specs.append(RuleSpec(id="flood", file="bench", line=1, action=ActionKind.BLACKLIST,
                          flood=FloodSpec(20, 60)))
    return RuleSet(specs)


def message() -> str:
    pool = CJK[:500] + list("abcdefg 0123456789，。！")
    return "".join(RNG.choices(pool, k=200))


def bench_engine(keywords: int) -> tuple[float, float, float]:
    started = time.perf_counter()
    rules = ruleset(keywords)
    build = time.perf_counter() - started
    engine = RuleEngine(rules)
    events = [Event(openid=f"o{i % 500:027d}", account="gh", create_time=1_700_000_000 + i // 50,
                    msg_type="text", texts=MappingProxyType({"content": message()}))
              for i in range(EVENTS)]
    warm, timed = events[:200], events[200:]
    for e in warm:  # warm the fold tables (not timed: the engine remembers their texts)
        engine.evaluate(e)
    started = time.perf_counter()
    for e in timed:
        engine.evaluate(e)
    per_event = (time.perf_counter() - started) / len(timed)
    return build, per_event * 1e6, 1 / per_event


def bench_flood(followers: int, max_keys: int) -> tuple[float, int, float]:
    tracemalloc.start()
    windows = SlidingWindows(max_keys=max_keys)
    started = time.perf_counter()
    for i in range(followers):  # all within one minute: nothing idles out
        windows.add(f"oFollower{i:019d}", 1_700_000_000 + i * 60 // followers, 60, 20)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del windows
    return current / 2**20, peak, elapsed


def main() -> None:
    print(f"engine: {EVENTS} events of 200 chars, 100 regexes + contact + flood rules")
    print(f"{'keywords':>10} {'build s':>9} {'us/event':>10} {'events/s':>10}")
    for n in (100, 10_000, 100_000):
        build, us, rate = bench_engine(n)
        print(f"{n:>10,} {build:>9.2f} {us:>10.1f} {rate:>10,.0f}")
    print("\nflood state, 1,000,000 distinct followers within 60 s (tracemalloc)")
    print(f"{'max_keys':>10} {'kept':>9} {'MiB':>8} {'s':>6}")
    for max_keys in (200_000, 1_000_000):
        mib, _, elapsed = bench_flood(1_000_000, max_keys)
        print(f"{max_keys:>10,} {min(max_keys, 1_000_000):>9,} {mib:>8.1f} {elapsed:>6.1f}")


if __name__ == "__main__":
    main()
