"""A trained spam model: per-gram weights, scored in pure Python on the hot path."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any

import ahocorasick

from bot.classifier.features import FEATURES, classifier_form, grams
from bot.core.errors import BotError

FORMAT = 1
# A text is divided by at least this many grams: two or three characters are too little
# evidence for a confident score either way (measured: no loss of recall at 8).
MIN_GRAMS = 8
# Where training figures are quoted when no rule has a classifier condition.
DEFAULT_THRESHOLD = 0.9
_SECOND = itemgetter(1)  # (end, number) -> number, at C speed


class ModelError(BotError):
    """A stored model that cannot be used (corrupt, or from another feature version)."""


@dataclass(frozen=True)
class Quality:
    """Cross-validated figures of a training run, at the threshold they were taken at."""

    threshold: float
    precision: float
    recall: float
    fpr: float
    folds: int

    def describe(self) -> str:
        """One line for the operator."""
        return (f"{self.folds}-fold cross-validated at score >= {self.threshold:g}: "
                f"precision {self.precision:.3f}, recall {self.recall:.3f}, "
                f"ham false-positive rate {self.fpr:.2%}")


@dataclass(frozen=True)
class Model:
    """Logistic regression over the distinct known 1-2-grams of a text.

    ``weights`` holds, per gram, its coefficient times its idf, so the log-odds are
    ``bias + sum(weights[g]) / sqrt(max(n, MIN_GRAMS))`` over the n distinct grams of
    the text that the model knows (grams it never saw carry no evidence either way).
    """

    weights: Mapping[str, float]
    bias: float
    spam: int
    ham: int
    trained_at: int
    quality: Quality | None = None
    features: str = FEATURES

    @property
    def samples(self) -> int:
        return self.spam + self.ham

    @cached_property
    def _scan(self) -> tuple[Any, list[float]]:
        """An Aho-Corasick automaton over the known grams and their weights by number.

        Measured: walking the text in C and meeting only known grams costs half of
        slicing out every gram and looking each up in a dict.
        """
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        table: list[float] = []
        for gram, weight in self.weights.items():
            automaton.add_word(gram, len(table))
            table.append(weight)
        if table:
            automaton.make_automaton()
        return automaton, table

    def prepare(self) -> Model:
        """Build the scanning automaton now (off the event loop), not on first use."""
        _ = self._scan
        return self

    def known(self, text: str) -> set[int]:
        """The numbers of the distinct known grams of ``text``."""
        automaton, table = self._scan
        if not table:
            return set()
        return set(map(_SECOND, automaton.iter(classifier_form(text))))

    def margin(self, text: str) -> float:
        """The log-odds that ``text`` is spam."""
        found = self.known(text)
        if not found:
            return self.bias
        return self.bias + sum(map(self._scan[1].__getitem__, found)) / math.sqrt(
            max(len(found), MIN_GRAMS))

    def score(self, text: str) -> float:
        """The spam probability of ``text``, 0..1."""
        return _sigmoid(self.margin(text))

    def explain(self, text: str, top: int = 5) -> list[tuple[str, float]]:
        """The grams of ``text`` that weigh most, either way, with their share of the
        log-odds (positive: towards spam)."""
        known = [g for g in grams(classifier_form(text)) if g in self.weights]
        if not known:
            return []
        scale = 1 / math.sqrt(max(len(known), MIN_GRAMS))
        weighed = [(gram, self.weights[gram] * scale) for gram in known]
        weighed.sort(key=lambda item: abs(item[1]), reverse=True)
        return weighed[:top]

    def summary(self) -> dict[str, Any]:
        """What /healthz and the CLI show of the model."""
        out: dict[str, Any] = {"samples": self.samples, "spam": self.spam, "ham": self.ham,
                               "trained_at": self.trained_at, "grams": len(self.weights)}
        if self.quality is not None:
            out["cv"] = {"threshold": self.quality.threshold,
                         "precision": round(self.quality.precision, 4),
                         "recall": round(self.quality.recall, 4),
                         "fpr": round(self.quality.fpr, 4)}
        return out

    # ------------------------------------------------------------------ storage

    def dumps(self) -> bytes:
        """The model as compressed JSON, for the store."""
        body = {"format": FORMAT, "features": self.features, "bias": self.bias,
                "spam": self.spam, "ham": self.ham, "trained_at": self.trained_at,
                "quality": None if self.quality is None else vars(self.quality),
                "weights": dict(self.weights)}
        return zlib.compress(json.dumps(body, ensure_ascii=False).encode("utf-8"), 6)

    @classmethod
    def loads(cls, blob: bytes) -> Model:
        """A model from :meth:`dumps`; ModelError when it is corrupt or incompatible."""
        try:
            body = json.loads(zlib.decompress(blob).decode("utf-8"))
        except (zlib.error, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise ModelError(f"stored model is corrupt ({type(exc).__name__})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ModelError("stored model has an unknown format; run `learn` again")
        if body.get("features") != FEATURES:
            raise ModelError(f"stored model reads {body.get('features')!r}, this version "
                             f"reads {FEATURES!r}; run `learn` again")
        try:
            weights = {str(k): float(v) for k, v in body["weights"].items()}
            quality = body.get("quality")
            return cls(weights=weights, bias=float(body["bias"]), spam=int(body["spam"]),
                       ham=int(body["ham"]), trained_at=int(body["trained_at"]),
                       quality=Quality(**quality) if quality else None)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"stored model is corrupt ({type(exc).__name__}: {exc})") \
                from None


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
