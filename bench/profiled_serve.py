"""`serve` under cProfile, for the stage table of `make bench PROFILE=1`.

Usage: profiled_serve.py STATS_OUT -- serve --config FILE

The event loop's thread is profiled from SIGUSR1 (sent once the server is ready,
so start-up is left out) to shutdown; the store's writer thread from its start
(its start-up is one migration check). Time spent in garbage collection is
measured apart through ``gc.callbacks`` (cProfile does not see it). On exit the
merged statistics are written to STATS_OUT with a JSON sidecar holding the GC time.
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import signal
import sys
import threading
import time

PROFILES: list[cProfile.Profile] = []
# The event loop's thread is saturated under the bench's load, so its wall time is its
# CPU time (and perf_counter is cheap: a CPU-time timer is a syscall per call event,
# which would swamp the profile). The writer waits on fsync and on its queue: it gets a
# CPU-time timer, so a COMMIT waiting on the disk costs nothing, as in the CPU figure.
MAIN = cProfile.Profile()
GC = {"seconds": 0.0, "collections": 0}
_gc_started: dict[int, float] = {}


def _on_gc(phase: str, _info: dict[str, int]) -> None:
    ident = threading.get_ident()
    if phase == "start":
        _gc_started[ident] = time.thread_time()
    elif ident in _gc_started:
        GC["seconds"] += time.thread_time() - _gc_started.pop(ident)
        GC["collections"] += 1


def _thread_hook(_frame, _event, _arg):  # type: ignore[no-untyped-def]
    """Runs at the first call in each new thread: profile the writer, leave the rest."""
    sys.setprofile(None)
    if threading.current_thread().name == "store-writer":
        profile = cProfile.Profile(time.thread_time)
        PROFILES.append(profile)
        profile.enable()


def _start_main(_signum: int, _frame: object) -> None:
    if MAIN not in PROFILES:
        PROFILES.append(MAIN)
        gc.callbacks.append(_on_gc)
        MAIN.enable()


def main() -> None:
    out = sys.argv[1]
    argv = sys.argv[sys.argv.index("--") + 1:]
    threading.setprofile(_thread_hook)
    signal.signal(signal.SIGUSR1, _start_main)
    from bot.cli import main as cli_main

    try:
        cli_main(argv)
    finally:
        MAIN.disable()
        stats = pstats.Stats(*PROFILES) if PROFILES else None
        if stats is not None:
            stats.dump_stats(out)
        with open(out + ".json", "w", encoding="utf-8") as side:
            json.dump(GC, side)


if __name__ == "__main__":
    main()
