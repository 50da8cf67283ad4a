"""The stage table of `make bench PROFILE=1`: where a push's CPU goes, from a cProfile run.

Each stage is the inclusive time of the functions that do it, per push (cProfile: the
saturated event loop's thread by wall time, the writer thread by its CPU time; garbage
collection also counts inside the stage it interrupted). cProfile slows Python calls
more than C work, so the table also gives each stage scaled to the unprofiled run's
CPU per push (same share of the whole); "other" is the rest of the process's measured
CPU: uvloop and the kernel (sockets, epoll, fsync's system time), the profiler's own.
"""

from __future__ import annotations

import json
import pstats
import sys
from pathlib import Path

# (stage, [(file suffix, function name), ...] added, [...] subtracted)
Key = tuple[str, str]
STAGES: list[tuple[str, list[Key], list[Key]]] = [
    ("push front: framing (httptools)", [("bot/web/front.py", "data_received")], []),
    ("push front: query, answer, write", [("bot/web/front.py", "_answer_all")],
     [("bot/web/webhook.py", "answer")]),
    ("HTTP receive (aiohttp parse, request)", [("aiohttp/web_protocol.py", "data_received")],
     []),
    ("aiohttp routing + handler glue", [("aiohttp/web_protocol.py", "_handle_request")],
     [("bot/web/webhook.py", "push"), ("aiohttp/web_protocol.py", "finish_response")]),
    ("body read", [("bot/web/webhook.py", "_read_body")], []),
    ("signature", [("bot/wechat/push.py", "check_signature")], []),
    ("XML parse + Event", [("bot/wechat/push.py", "parse_event")], []),
    ("dedup key + retry memory", [("bot/core/models.py", "dedup_key"),
                                  ("bot/web/retries.py", "claim"),
                                  ("bot/web/retries.py", "finish")], []),
    ("engine: folding", [("bot/rules/compiled.py", "match_texts")],
     [("bot/rules/compiled.py", "_match_keywords"), ("bot/rules/compiled.py", "_match_regexes"),
      ("bot/rules/compiled.py", "_match_contacts"), ("bot/rules/compiled.py",
                                                      "_match_classifier"),
      ("bot/classifier/model.py", "score")]),
    ("engine: keywords", [("bot/rules/compiled.py", "_match_keywords")], []),
    ("engine: regexes", [("bot/rules/compiled.py", "_match_regexes")], []),
    ("engine: contact detectors", [("bot/rules/compiled.py", "_match_contacts")], []),
    ("engine: classifier", [("bot/rules/compiled.py", "_match_classifier"),
                            ("bot/classifier/model.py", "score")], []),
    ("engine: flood/warn windows", [("bot/rules/engine.py", "_count_flood"),
                                    ("bot/rules/engine.py", "_warn")], []),
    ("engine: decision building", [("bot/rules/engine.py", "evaluate")],
     [("bot/rules/compiled.py", "match_texts"), ("bot/rules/engine.py", "_count_flood"),
      ("bot/rules/engine.py", "_warn")]),
    ("record: event row + queueing", [("bot/storage/sqlite/store.py", "record"),
                                      ("bot/storage/sqlite/store.py", "_send_outgoing")], []),
    ("record: settle futures", [("bot/storage/sqlite/store.py", "_settle_all")], []),
    ("writer: events INSERT (dedup in it)", [("bot/storage/sqlite/records.py",
                                              "_insert_events")], []),
    ("writer: decisions INSERT + actions", [("bot/storage/sqlite/records.py",
                                             "record_pushes")],
     [("bot/storage/sqlite/records.py", "_insert_events")]),
    ("writer: BEGIN/COMMIT + batching", [("bot/storage/sqlite/store.py", "_serve")],
     [("bot/storage/sqlite/records.py", "record_pushes"),
      ("bot/storage/sqlite/store.py", "_run_job")]),
    ("metrics", [("bot/web/webhook.py", "_pushes"), ("bot/web/webhook.py", "_count"),
                 ("bot/metrics.py", "push_observed"),
                 ("prometheus_client/metrics.py", "inc"),
                 ("prometheus_client/metrics.py", "observe")], []),
    ("mod log line", [("bot/web/webhook.py", "_log_decision")], []),
    ("reply", [("bot/wechat/push.py", "reply")], []),
    ("response write", [("aiohttp/web_protocol.py", "finish_response")], []),
]


def _cumulative(stats: pstats.Stats) -> dict[Key, float]:
    """Inclusive seconds by (file, function), summed over same-named functions."""
    out: dict[Key, float] = {}
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for suffix in {k[0] for stage in STAGES for k in (*stage[1], *stage[2])}:
            if filename.endswith(suffix):
                out[(suffix, name)] = out.get((suffix, name), 0.0) + ct
    return out


def print_stages(stats_path: Path, profiled: dict[str, float],
                 unprofiled: dict[str, float]) -> None:
    """The table: profiled us per push by stage, and scaled to the unprofiled run."""
    stats = pstats.Stats(str(stats_path))
    pushes = profiled["total_requests"]
    gc_time = json.loads(Path(str(stats_path) + ".json").read_text())
    cum = _cumulative(stats)
    rows = [(stage, (sum(cum.get(k, 0.0) for k in plus) - sum(cum.get(k, 0.0) for k in minus))
             / pushes * 1e6) for stage, plus, minus in STAGES]
    named = sum(us for _stage, us in rows)
    measured = profiled.get("cpu_us", 0.0)
    # The loop's wall time counts other processes' turns on a busy machine: when the
    # stages add up past the CPU measured, they are the whole.
    whole = max(measured, named)
    scale = unprofiled.get("cpu_us", 0.0) / whole if whole else 0.0
    rows.append(("other (event loop, kernel, profiler)", whole - named))
    rows.append((f"  of which garbage collection ({gc_time['collections']} runs)",
                 gc_time["seconds"] / pushes * 1e6))
    print(f"\nwhere a push's CPU goes (cProfile, {pushes:.0f} pushes; profiled {measured:.0f} "
          f"us/push CPU, unprofiled {unprofiled.get('cpu_us', 0):.0f}; scaled = share of the "
          f"profile x unprofiled CPU)")
    print(f"{'stage':<44}{'profiled us':>12}{'scaled us':>11}")
    for stage, us in rows:
        print(f"{stage:<44}{us:>12.1f}{us * scale:>11.1f}")
    print(f"{'total':<44}{whole:>12.1f}{whole * scale:>11.1f}")


def print_top(stats_path: Path, n: int = 40) -> None:
    """The profile's heaviest functions, for a look beyond the table."""
    stats = pstats.Stats(str(stats_path))
    stats.sort_stats("tottime").print_stats(n)


if __name__ == "__main__":
    print_top(Path(sys.argv[1]))
