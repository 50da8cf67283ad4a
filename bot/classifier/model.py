"""A trained spam model: a weight per gram bucket, scored with a few numpy calls a text."""

from __future__ import annotations

import base64
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from bot.classifier.features import (
    BUCKETS,
    FEATURES,
    MAX_CHARS,
    buckets,
    classifier_form,
    distinct_buckets,
    grams,
)
from bot.core.errors import BotError

FORMAT = 2
# A text is divided by at least this many grams: two or three characters are too little
# evidence for a confident score either way (measured: no loss of recall at 8).
MIN_GRAMS = 8
# Where training figures are quoted when no rule has a classifier condition.
DEFAULT_THRESHOLD = 0.9
# Texts (in classifier form) up to this long are scored without numpy calls that drop
# the GIL (see margin); WeChat messages mostly are. Longer ones: numpy is faster.
SHORT_FORM = 48


# 1 / sqrt(max(n, MIN_GRAMS)) for n distinct buckets, looked up on the hot path
_NORM = tuple(1 / math.sqrt(max(n, MIN_GRAMS)) for n in range(3 * MAX_CHARS))


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
    """Logistic regression over the hashed distinct grams of a text (features.buckets).

    ``weights`` holds, per bucket, its coefficient times its idf, so the log-odds are
    ``bias + sum(weights[b]) / sqrt(max(n, MIN_GRAMS))`` over the n distinct buckets of
    the text's grams (a bucket no training text filled weighs 0, but counts in n).
    """

    weights: Mapping[int, float]
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
    def _table(self) -> np.ndarray:
        """The weight of every bucket, filled or not, to index with a text's buckets."""
        table = np.zeros(BUCKETS, dtype=np.float32)
        if self.weights:
            table[np.fromiter(self.weights, dtype=np.int64, count=len(self.weights))] = \
                np.fromiter(self.weights.values(), dtype=np.float64, count=len(self.weights))
        return table

    @cached_property
    def _weights(self) -> memoryview:
        """The same table read one bucket at a time from Python (no numpy call)."""
        return memoryview(self._table.data)

    def prepare(self) -> Model:
        """Build the weight table now (off the event loop), not on first use."""
        _ = self._weights
        return self

    def margin(self, text: str) -> float:
        """The log-odds that ``text`` is spam."""
        form = classifier_form(text)
        if len(form) <= SHORT_FORM:
            # A set and the memoryview, not numpy's sort and take: both release the GIL,
            # and on the hot path each release wakes the store's writer thread for it
            # (measured in the server, distinct texts: voluntary context switches per push
            # 0.11 -> 0.21 on the event loop and 0.69 -> 1.51 on the writer with numpy
            # here, and ~60 us more CPU a push). Same cost below this length.
            weights = self._weights
            found: Any = set(buckets(form).tolist())
            total: float = sum(map(weights.__getitem__, found))
        else:
            found = distinct_buckets(form)
            total = float(np.add.reduce(self._table.take(found)))
        return self.bias + total * _NORM[len(found)]

    def score(self, text: str) -> float:
        """The spam probability of ``text``, 0..1."""
        return _sigmoid(self.margin(text))

    def explain(self, text: str, top: int = 5) -> list[tuple[str, float]]:
        """The grams of ``text`` that weigh most, either way, with their share of the
        log-odds (positive: towards spam): the shares and the bias add up to
        :meth:`margin`. Grams of the text that share a bucket share its weight, and are
        named together ("a|b"); "a_b" is a and b two apart."""
        form = classifier_form(text)
        named: dict[int, list[str]] = {}
        for gram, bucket in zip(grams(form), buckets(form).tolist(), strict=True):
            names = named.setdefault(bucket, [])
            if gram not in names:
                names.append(gram)
        scale = _NORM[len(named)]
        shares = [("|".join(names), float(self._table[bucket]) * scale)
                  for bucket, names in named.items() if self._table[bucket]]
        return sorted(shares, key=lambda item: abs(item[1]), reverse=True)[:top]

    def summary(self) -> dict[str, Any]:
        """What /healthz and the CLI show of the model."""
        out: dict[str, Any] = {"samples": self.samples, "spam": self.spam, "ham": self.ham,
                               "trained_at": self.trained_at, "buckets": len(self.weights)}
        if self.quality is not None:
            out["cv"] = {"threshold": self.quality.threshold,
                         "precision": round(self.quality.precision, 4),
                         "recall": round(self.quality.recall, 4),
                         "fpr": round(self.quality.fpr, 4)}
        return out

    # ------------------------------------------------------------------ storage

    def dumps(self) -> bytes:
        """The model as compressed JSON, for the store."""
        numbers = np.fromiter(self.weights, dtype=np.int64, count=len(self.weights))
        order = np.argsort(numbers)
        values = np.fromiter(self.weights.values(), dtype=np.float64, count=len(numbers))
        body = {"format": FORMAT, "features": self.features, "bias": self.bias,
                "spam": self.spam, "ham": self.ham, "trained_at": self.trained_at,
                "quality": None if self.quality is None else vars(self.quality),
                # ascending buckets as gaps from the previous one: mostly small numbers
                "buckets": _pack(np.diff(numbers[order], prepend=0), "<u4"),
                "weights": _pack(values[order], "<f4")}
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
            weights = _weights(body["buckets"], body["weights"])
            quality = body.get("quality")
            return cls(weights=weights, bias=float(body["bias"]), spam=int(body["spam"]),
                       ham=int(body["ham"]), trained_at=int(body["trained_at"]),
                       quality=Quality(**quality) if quality else None)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"stored model is corrupt ({type(exc).__name__}: {exc})") \
                from None


def _pack(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(values.astype(dtype).tobytes()).decode("ascii")


def _weights(gaps: Any, values: Any) -> dict[int, float]:
    """Bucket -> weight from the stored arrays; ValueError unless they fit the table."""
    if not isinstance(gaps, str) or not isinstance(values, str):
        raise ValueError("buckets and weights must be base64 text")
    # b64decode raises binascii.Error, frombuffer a ValueError on a partial number
    steps = np.frombuffer(base64.b64decode(gaps, validate=True), dtype="<u4")
    weights = np.frombuffer(base64.b64decode(values, validate=True), dtype="<f4")
    if len(steps) != len(weights):
        raise ValueError("buckets and weights differ in length")
    if len(steps) > 1 and not steps[1:].all():
        raise ValueError("a bucket is given twice")
    numbers = np.cumsum(steps, dtype=np.int64)
    if len(numbers) and numbers[-1] >= BUCKETS:
        raise ValueError(f"a bucket outside 0..{BUCKETS - 1}")
    if not np.isfinite(weights).all():
        raise ValueError("a weight is not a finite number")
    return dict(zip(numbers.tolist(), weights.astype(np.float64).tolist(), strict=True))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
