"""Learning: read labelled files, train on stored samples plus the seed set, store the model."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlite_utils import Database

from bot.classifier.model import Model, Quality, Sample
from bot.errors import BotError
from bot.samples import save_model, stored_samples

log = logging.getLogger(__name__)
# The threshold figures are quoted at when no rule file has a classifier condition.
DEFAULT_THRESHOLD = 0.9
MAX_TEXT = 10_000
FOLDS = 5


class SampleFileError(BotError):
    """Labelled files with bad lines: every problem as ``file:line: message``."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def read_jsonl(path: Path, errors: list[str]) -> list[Sample]:
    """``{"text", "label": "spam"|"ham"}`` a line; extra keys are ignored."""
    samples = []
    for number, line in enumerate(_lines(path, errors), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{path}:{number}: not JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            errors.append(f"{path}:{number}: expected an object {{\"text\", \"label\"}}")
            continue
        text, label = row.get("text"), row.get("label")
        if label not in ("spam", "ham"):
            errors.append(f"{path}:{number}: 'label' must be \"spam\" or \"ham\", "
                          f"got {label!r}")
        elif not isinstance(text, str) or _text_problem(text):
            errors.append(f"{path}:{number}: 'text' {_text_problem(text)}")
        else:
            samples.append(Sample(text, label == "spam"))
    return samples


def read_plain(path: Path, spam: bool, errors: list[str]) -> list[Sample]:
    """One text a line (blank lines skipped)."""
    samples = []
    for number, line in enumerate(_lines(path, errors), start=1):
        if not line.strip():
            continue
        if problem := _text_problem(line):
            errors.append(f"{path}:{number}: text {problem}")
        else:
            samples.append(Sample(line.strip(), spam))
    return samples


def _lines(path: Path, errors: list[str]) -> list[str]:
    try:
        # split on \n only: texts may hold U+2028 and friends, which splitlines() breaks on
        return path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        errors.append(f"{path}:1: not UTF-8 text (byte {exc.start})")
    except OSError as exc:
        errors.append(f"{path}:0: cannot read: {exc.strerror}")
    return []


def _text_problem(text: object) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return "must be a non-empty string"
    if len(text) > MAX_TEXT:
        return f"is longer than {MAX_TEXT} characters"
    return None


def read_files(jsonl: Sequence[str], spam: Sequence[str], ham: Sequence[str]
               ) -> list[Sample]:
    """Every sample of the files; SampleFileError (nothing returned) on any bad line."""
    errors: list[str] = []
    samples = [s for p in jsonl for s in read_jsonl(Path(p), errors)]
    samples += [s for p in spam for s in read_plain(Path(p), True, errors)]
    samples += [s for p in ham for s in read_plain(Path(p), False, errors)]
    if errors:
        raise SampleFileError(errors)
    return samples


def seed_samples() -> list[Sample]:
    """The shipped seed set: texts this project wrote, one a line, per label."""
    out: list[Sample] = []
    folder = resources.files("bot.classifier") / "seed"
    for name, spam in (("spam.txt", True), ("ham.txt", False)):
        try:
            text = (folder / name).read_text(encoding="utf-8")
        except OSError:  # an installation without package data: train on what is stored
            log.warning("seed samples %s missing from the installation", name)
            continue
        out += [Sample(line.strip(), spam) for line in text.split("\n")
                if line.strip() and not line.startswith("#")]
    return out


@dataclass(frozen=True)
class Trained:
    """A training run: the stored model and what it took."""

    model: Model
    model_id: int
    seconds: float
    stored: int
    seeds: int


def train(stored: Sequence[Sample], seeds: Sequence[Sample], *, threshold: float, now: int,
          validate: bool = True) -> Model:
    """A model trained on ``stored`` plus ``seeds`` (pure computation: run it off the loop).

    With ``validate``, the stored samples are also scored by ``FOLDS``-fold
    cross-validation (seeds always in the training folds) and the model keeps the
    figures at ``threshold``.
    """
    from bot.classifier.train import cross_validate, fit  # numpy: only when training

    quality: Quality | None = None
    if validate and len({s.spam for s in stored}) == 2 and len(stored) >= 2 * FOLDS:
        quality, _ = cross_validate(stored, threshold=threshold, folds=FOLDS, extra=seeds)
    return fit(_unique([*stored, *seeds]), now=now, quality=quality)


def train_and_store(db: Database, *, threshold: float, now: int, source: str) -> Trained:
    """Train on every stored sample plus the seeds and store the model (for the CLI)."""
    started = time.process_time()
    stored = stored_samples(db)
    seeds = seed_samples()
    model = train(stored, seeds, threshold=threshold, now=now)
    model_id = save_model(db, model.dumps(), trained_at=now, samples=model.samples,
                          source=source)
    return Trained(model, model_id, time.process_time() - started, len(stored), len(seeds))


def _unique(samples: list[Sample]) -> list[Sample]:
    """One sample per text, the first label given winning (stored samples come first)."""
    seen: dict[str, Sample] = {}
    for sample in samples:
        seen.setdefault(sample.text, sample)
    return list(seen.values())


def stored_model(path: str | Path) -> Model | None:
    """The model in force in the database at ``path`` (None: no database, or no model).

    ModelError when the newest stored model cannot be read.
    """
    from bot.samples import latest_model_id, load_model_blob
    from bot.schema import open_db

    if not Path(path).is_file():
        return None
    db = open_db(path)
    try:
        model_id = latest_model_id(db)
        blob = load_model_blob(db, model_id) if model_id else None
    finally:
        db.close()
    return Model.loads(blob) if blob is not None else None
