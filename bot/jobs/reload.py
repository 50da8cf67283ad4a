"""Hot reload: poll the rules directory and swap in new rules when its files change."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from bot.core.errors import RuleError
from bot.rules.compiled import RuleSet
from bot.rules.engine import RuleEngine
from bot.rules.loader import SUFFIXES, load_ruleset

log = logging.getLogger(__name__)
Snapshot = tuple[tuple[str, int, int], ...]


def snapshot(directory: Path) -> Snapshot:
    """Names, mtimes and sizes of the rule files: any edit, addition or removal changes it."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return ()
    state = []
    for path in entries:
        if path.suffix not in SUFFIXES:
            continue
        try:
            stat = path.stat()
        except OSError:  # removed between listing and stat: the next poll sees it gone
            continue
        state.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(state))


class RuleWatcher:
    """Reloads rules when the directory changes; a broken change keeps the last good rules.

    ``last_error`` holds the rejection (``file:line: message`` lines) until a later
    change loads cleanly; ``loaded_at`` is the unix time of the last successful load.
    """

    def __init__(self, directory: str | Path, engine: RuleEngine, interval: float,
                 on_change: Callable[[RuleSet], None] | None = None,
                 on_error: Callable[[RuleError], None] | None = None, *,
                 clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.engine = engine
        self.interval = interval
        self.on_change = on_change
        self.on_error = on_error
        self.last_error: str | None = None
        self._clock = clock
        self.loaded_at: float | None = clock()
        # The engine was built from the directory as it is now; only later edits count.
        self._snapshot = snapshot(self.directory)

    async def run(self) -> None:
        """Poll forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:  # a poll failing must not end hot reload for good
                log.exception("rules reload check failed")

    async def check_once(self) -> bool:
        """Reload if the files changed; True when a change was seen (loaded or rejected)."""
        current = await asyncio.to_thread(snapshot, self.directory)
        if current == self._snapshot:
            return False
        self._snapshot = current
        try:
            ruleset = await asyncio.to_thread(load_ruleset, self.directory)
        except RuleError as exc:
            self.last_error = str(exc)
            for line in exc.errors:
                log.error("rules change rejected, previous rules stay in force: %s", line)
            if self.on_error is not None:
                self.on_error(exc)
            return True
        self.engine.replace(ruleset)
        self.last_error = None
        self.loaded_at = self._clock()
        log.info("rules reloaded: %s", ruleset.describe())
        if self.on_change is not None:
            self.on_change(ruleset)
        return True
