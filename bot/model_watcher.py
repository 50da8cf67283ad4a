"""Hot reload of the classifier: poll the store for a newer model and put it in force."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlite_utils import Database

from bot.classifier.model import Model, ModelError
from bot.learn import DEFAULT_THRESHOLD, seed_samples, train
from bot.rules.engine import RuleEngine
from bot.samples import (
    latest_model_id,
    load_model_blob,
    newest_sample_at,
    save_model,
    stored_samples,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
Call = Callable[[Callable[[Database], T]], Awaitable[T]]


class ModelWatcher:
    """Keeps the engine's model the newest stored one; a bad one keeps the last good.

    With no model stored and a rule using the classifier, the first start trains one
    from the shipped seed samples (off the event loop), so the classifier works out of
    the box. ``last_error`` says why the newest model is not in force.
    """

    def __init__(self, call: Call[Any], engine: RuleEngine, interval: float,
                 threshold: Callable[[], float] = lambda: DEFAULT_THRESHOLD):
        self.call = call
        self.engine = engine
        self.interval = interval
        self.threshold = threshold
        self.model_id = 0
        self.last_error: str | None = None
        self._seeded = False

    @property
    def model(self) -> Model | None:
        model = self.engine.model
        return model if isinstance(model, Model) else None

    async def run(self) -> None:
        """Poll forever (cancel the task to stop)."""
        while True:
            try:
                await self.check_once()
            except Exception:  # a poll failing must not end hot reload for good
                log.exception("model reload check failed")
            await asyncio.sleep(self.interval)

    async def check_once(self) -> bool:
        """Put a newer stored model in force; True when one was loaded."""
        newest = await self.call(latest_model_id)
        if newest == 0:
            if not self._seeded and self.engine.ruleset.uses_classifier:
                self._seeded = True
                await self._train_seed()
            return False
        if newest == self.model_id:
            return False
        blob = await self.call(lambda db: load_model_blob(db, newest))
        try:
            if blob is None:
                raise ModelError(f"model {newest} vanished while being read")
            model = await asyncio.to_thread(lambda: Model.loads(blob).prepare())
        except ModelError as exc:
            self.model_id = newest  # not retried until a newer one is stored
            self.last_error = f"model {newest}: {exc}"
            log.error("classifier model %d rejected, the previous one stays in force: %s",
                      newest, exc)
            return False
        self.engine.use_model(model)
        self.model_id, self.last_error = newest, None
        log.info("classifier model %d in force: %s", newest, model.summary())
        return True

    async def retrain_if_new(self) -> bool:
        """Retrain (the nightly job) when samples were stored since the model in force
        was trained; True when a model was stored (put in force by the next poll)."""
        newest = await self.call(newest_sample_at)
        model = self.model
        if not newest or (model is not None and newest <= model.trained_at):
            return False
        log.info("new samples since the model in force: retraining the classifier")
        return await self._train("nightly", validate=True)

    async def _train_seed(self) -> None:
        """Train from the seeds (and anything stored) off the loop and the writer thread."""
        log.info("no classifier model yet: training one from the shipped seed samples")
        await self._train("seed", validate=False)

    async def _train(self, source: str, *, validate: bool) -> bool:
        """Train on the stored samples and the seeds off the loop and the writer thread
        (the database is read and written in two short calls), and store the model."""
        started = time.monotonic()
        now = int(time.time())
        stored = await self.call(stored_samples)
        try:
            model = await asyncio.to_thread(train, stored, seed_samples(),
                                            threshold=self.threshold(), now=now,
                                            validate=validate)
        except ValueError as exc:  # no seeds installed and nothing learnt yet
            log.warning("no classifier model (%s): classifier rules never fire until "
                        "`python -m bot learn` trains one", exc)
            return False
        blob = await asyncio.to_thread(model.dumps)
        await self.call(lambda db: save_model(db, blob, trained_at=now,
                                              samples=model.samples, source=source))
        log.info("%s model trained on %d samples in %.1f s%s", source, model.samples,
                 time.monotonic() - started,
                 f"; {model.quality.describe()}" if model.quality else "")
        return True
