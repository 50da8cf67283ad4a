"""Hot reload of the classifier: poll the store for a newer model and put it in force."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bot.classifier.files import seed_samples
from bot.classifier.model import DEFAULT_THRESHOLD, Model, ModelError
from bot.classifier.train import train
from bot.rules.engine import RuleEngine
from bot.storage.ports import ClassifierStore

log = logging.getLogger(__name__)


class ModelWatcher:
    """Keeps the engine's model the newest stored one; a bad one keeps the last good.

    With no model stored and a rule using the classifier, the first start trains one
    from the shipped seed samples (off the event loop), so the classifier works out of
    the box; so does a start where no stored model can be used (all from an older
    feature version, say), from the stored samples and the seeds. ``last_error`` says
    why the newest model is not in force.
    """

    def __init__(self, store: ClassifierStore, engine: RuleEngine, interval: float, *,
                 clock: Callable[[], float],
                 threshold: Callable[[], float] = lambda: DEFAULT_THRESHOLD):
        self.store = store
        self.clock = clock
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
        newest = await self.store.latest_model_id()
        if newest == 0:
            await self._train_once("no classifier model yet")
            return False
        if newest == self.model_id:
            return False
        self.model_id = newest  # a rejected one is not retried until a newer one is stored
        self.last_error = None
        for candidate in await self.store.model_ids():
            if candidate < newest and self.model is not None:
                break  # the last good one is in force already
            model = await self._load(candidate)
            if model is not None:
                self.engine.use_model(model)
                log.info("classifier model %d in force: trained on %d samples (%d spam, "
                         "%d ham), %d weighted n-gram buckets", candidate, model.samples,
                         model.spam, model.ham, len(model.weights))
                return True
        if self.model is None:  # every stored model refused, and none was ever in force
            await self._train_once("no stored classifier model can be used")
        return False

    async def _load(self, model_id: int) -> Model | None:
        """A stored model ready to score, or None (logged, and kept in ``last_error``)."""
        blob = await self.store.model_blob(model_id)
        try:
            if blob is None:
                raise ModelError("it vanished while being read")
            return await asyncio.to_thread(lambda: Model.loads(blob).prepare())
        except ModelError as exc:
            self.last_error = self.last_error or f"model {model_id}: {exc}"
            log.error("classifier model %d rejected, %s: %s", model_id,
                      "the previous one stays in force" if self.model is not None
                      else "trying an older one", exc)
            return None

    async def retrain_if_new(self) -> None:
        """Retrain (the nightly job) when samples were stored since the model in force
        was trained; the next poll puts the new model in force."""
        newest = await self.store.newest_sample_at()
        model = self.model
        if not newest or (model is not None and newest <= model.trained_at):
            return
        log.info("new samples since the model in force: retraining the classifier")
        await self._train("nightly", validate=True)

    async def _train_once(self, why: str) -> None:
        """Train from the seeds and anything stored, once per process, when a rule needs
        a model and none is in force."""
        if self._seeded or not self.engine.ruleset.uses_classifier:
            return
        self._seeded = True
        log.info("%s: training one from the stored and the shipped seed samples", why)
        await self._train("seed", validate=False)

    async def _train(self, source: str, *, validate: bool) -> None:
        """Train on the stored samples and the seeds off the loop and the writer thread
        (the database is read and written in two short calls), and store the model."""
        started = self.clock()
        now = int(started)
        basis = await self.store.latest_model_id()
        stored = await self.store.samples()
        try:
            threshold = self.threshold()
            model = await asyncio.to_thread(lambda: train(  # reading the seeds is disk I/O
                stored, seed_samples(), threshold=threshold, now=now, validate=validate))
        except ValueError as exc:  # no seeds installed and nothing learnt yet
            log.warning("no classifier model (%s): classifier rules never fire until "
                        "`python -m bot learn` trains one", exc)
            return
        blob = await asyncio.to_thread(model.dumps)
        saved = await self.store.save_model(blob, trained_at=now, samples=model.samples,
                                            source=source, unless_newer_than=basis)
        if not saved:  # `learn` stored one meanwhile, from newer samples: it stays
            log.info("%s model discarded: a newer model was stored while it trained", source)
            return
        log.info("%s model trained on %d samples in %.1f s%s", source, model.samples,
                 self.clock() - started,
                 f"; {model.quality.describe()}" if model.quality else "")
