"""Training and cross-validation: L2 logistic regression fitted with L-BFGS in numpy."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from bot.classifier.features import classifier_form, distinct_buckets
from bot.classifier.model import MIN_GRAMS, Model, Quality
from bot.core.models import Sample

# Inverse regularisation strength. Chosen by 5-fold cross-validation on the dev set, mean of
# 3 fold seeds, with the rules at min_score 0.7 (recall / ham false positives of 2,800):
# C=30 0.900 / 12.0, 50 0.903 / 12.7, 100 0.904 / 13.3, 300 0.907 / 13.7. Past 50 the
# false positives grow faster than the recall.
C = 50.0
# Feature scale: idf / sqrt(n) runs about 5x the unit-norm tf-idf the C above was
# measured with; dividing keeps the same regularisation.
_SCALE = 0.2
_MEMORY = 10
FOLDS = 5
# Beside an operator's own samples the seeds weigh less: theirs say what their followers
# write (measured as C above, at C=30: seeds at 0.3 0.894 / 11.7, 0.2 0.898 / 11.7,
# 0.15 0.900 / 12.0; at C=100: 0.15 0.904 / 13.3, 0.1 0.906 / 13.3).
SEED_WEIGHT = 0.15
_MAX_ITERATIONS = 300
# Each gram's column is scaled by |its naive-Bayes log-count ratio| ** NB_POWER (the
# "NBSVM" of Wang & Manning 2012, here with logistic loss): the prior then favours
# grams that already separate the classes. 5-fold on the dev file, recall at 0.5% FPR
# (classifier alone / with the rules): plain tf-idf 0.859 / 0.883; power 0.25
# 0.872 / 0.891; 0.5 0.884 / 0.902; 0.75 0.885 / 0.897; 1.0 0.882 / 0.902. Again with
# the hashed 1-2-grams and pairs two apart (3 fold seeds, rules at min_score 0.68, recall
# / false positives): 0.35 0.904 / 13.7, 0.5 0.906 / 13.0, 0.7 0.907 / 14.0.
NB_POWER = 0.5


class _Design:
    """The sparse design matrix of a training set, as flat coordinate arrays: one entry
    per (text, bucket) holding the bucket's idf divided by the square root of the text's
    count of distinct buckets."""

    def __init__(self, found: Sequence[np.ndarray]):
        self.n = len(found)
        lengths = np.fromiter(map(len, found), dtype=np.int64, count=self.n)
        self.rows = np.repeat(np.arange(self.n, dtype=np.int64), lengths)
        # vocab: the buckets in use, ascending; cols: each entry's index into it
        self.vocab, cols = np.unique(np.concatenate([*found, np.empty(0, np.uint32)]),
                                     return_inverse=True)
        self.cols = cols.astype(np.int64)
        self.d = len(self.vocab)
        df = np.bincount(self.cols, minlength=self.d)
        self.idf = np.log((1 + self.n) / (1 + df)) + 1
        norms = _SCALE / np.sqrt(np.maximum(lengths, MIN_GRAMS))
        self.vals = self.idf[self.cols] * norms[self.rows]

    def margins(self, w: np.ndarray, b: float) -> np.ndarray:
        return np.bincount(self.rows, weights=self.vals * w[self.cols], minlength=self.n) + b


def _objective(design: _Design, y: np.ndarray, weight: np.ndarray, c: float):
    """Loss and gradient over (w, b) packed in one vector (b unregularised)."""

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = design.margins(w, b)
        # log(1 + exp(-s z)) with s = +-1, stably
        s = 2 * y - 1
        loss = c * float(np.dot(weight, np.logaddexp(0, -s * z))) + 0.5 * float(w @ w)
        r = c * weight * (_sigmoid(z) - y)
        grad = np.empty_like(theta)
        grad[:-1] = np.bincount(design.cols, weights=design.vals * r[design.rows],
                                minlength=design.d) + w
        grad[-1] = r.sum()
        return loss, grad

    return f


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))


def _lbfgs(f, theta: np.ndarray) -> np.ndarray:
    """Minimise the smooth convex ``f`` (loss, gradient) from ``theta``."""
    loss, grad = f(theta)
    history: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(_MAX_ITERATIONS):
        direction = -_two_loop(grad, history)
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction: start the memory again
            history.clear()
            direction, slope = -grad, -float(grad @ grad)
        step = 1.0 if history else min(1.0, 1.0 / max(math.sqrt(-slope), 1e-12))
        while True:  # backtracking (Armijo)
            candidate = theta + step * direction
            new_loss, new_grad = f(candidate)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yk = candidate - theta, new_grad - grad
        sy = float(s @ yk)
        if sy > 1e-10:
            history.append((s, yk, 1.0 / sy))
            del history[:-_MEMORY]
        converged = abs(loss - new_loss) <= 1e-7 * max(1.0, abs(loss))
        theta, loss, grad = candidate, new_loss, new_grad
        if converged or float(np.abs(grad).max()) < 1e-6:
            break
    return theta


def _two_loop(grad: np.ndarray, history: list[tuple[np.ndarray, np.ndarray, float]]
              ) -> np.ndarray:
    q = grad.copy()
    alphas = []
    for s, y, rho in reversed(history):
        alpha = rho * float(s @ q)
        alphas.append(alpha)
        q -= alpha * y
    if history:
        s, y, _ = history[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), alpha in zip(history, reversed(alphas), strict=True):
        q += (alpha - rho * float(y @ q)) * s
    return q


def fit(samples: Sequence[Sample], *, now: int, c: float = C,
        quality: Quality | None = None, extra: Sequence[Sample] = (),
        extra_weight: float = 1.0) -> Model:
    """A model trained on ``samples`` and ``extra`` ones weighing ``extra_weight`` each
    (both labels needed); the two classes weigh equally in all."""
    everything = [*samples, *extra]
    found = [distinct_buckets(classifier_form(s.text)) for s in everything]
    y = np.fromiter((s.spam for s in everything), dtype=np.float64, count=len(everything))
    spam = int(y.sum())
    ham = len(everything) - spam
    if not spam or not ham:
        raise ValueError("training needs both spam and ham samples")
    weight = np.where(y == 1, len(y) / (2 * spam), len(y) / (2 * ham))
    weight[len(samples):] *= extra_weight
    design = _Design(found)
    scale = _nb_scale(design, y, weight)
    design.vals = design.vals * scale[design.cols]
    theta = _lbfgs(_objective(design, y, weight, c), np.zeros(design.d + 1))
    # float32, as the model's table holds them: a stored model scores as the fresh one
    coef = (theta[:-1] * scale * design.idf * _SCALE).astype(np.float32)
    weights = {b: v for b, v in zip(design.vocab.tolist(), coef.tolist(), strict=True) if v}
    return Model(weights=weights, bias=float(theta[-1]), spam=spam, ham=ham,
                 trained_at=now, quality=quality)


def _nb_scale(design: _Design, y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per column, |log((p_j / |p|) / (q_j / |q|))| ** NB_POWER with p, q the weighted
    spam and ham document counts of gram j (add-one smoothed), mean scaled to 1 so that
    ``C`` keeps its meaning."""
    spam = np.bincount(design.cols, weights=(weight * y)[design.rows], minlength=design.d) + 1
    ham = np.bincount(design.cols, weights=(weight * (1 - y))[design.rows],
                      minlength=design.d) + 1
    ratio = np.abs(np.log((spam / spam.sum()) / (ham / ham.sum()))) ** NB_POWER
    return ratio / ratio.mean()


def cross_validate(samples: Sequence[Sample], *, threshold: float, folds: int = 5,
                   seed: int = 0, extra: Sequence[Sample] = ()
                   ) -> tuple[Quality, list[float]]:
    """Quality at ``threshold`` over stratified folds, and each sample's held-out score.

    ``extra`` samples (the seeds) join every training fold and are never scored.
    """
    scores = [0.0] * len(samples)
    for model, held in fold_models(samples, extra, folds=folds, seed=seed):
        for i in held:
            scores[i] = model.score(samples[i].text)
    return quality_at(samples, scores, threshold, folds), scores


def fold_models(samples: Sequence[Sample], extra: Sequence[Sample] = (), *,
                folds: int = FOLDS, seed: int = 0) -> Iterator[tuple[Model, list[int]]]:
    """Per stratified fold: a model trained on the other folds plus ``extra`` (weighing
    SEED_WEIGHT), and the indices of the samples it held out."""
    order = np.random.default_rng(seed).permutation(len(samples))
    fold_of = np.empty(len(samples), dtype=np.int64)
    for label in (True, False):  # stratified: each fold gets its share of each label
        members = [i for i in order if samples[i].spam is label]
        for rank, index in enumerate(members):
            fold_of[index] = rank % folds
    for k in range(folds):
        held = np.flatnonzero(fold_of == k).tolist()
        held_out = {samples[i].text for i in held}
        kept = [samples[i] for i in range(len(samples)) if fold_of[i] != k]
        yield fit(kept, now=0, extra=[s for s in extra if s.text not in held_out],
                  extra_weight=SEED_WEIGHT), held


def quality_at(samples: Sequence[Sample], scores: Sequence[float], threshold: float,
               folds: int) -> Quality:
    """Precision, recall and ham false-positive rate of ``scores >= threshold``."""
    tp = sum(1 for s, p in zip(samples, scores, strict=True) if s.spam and p >= threshold)
    fp = sum(1 for s, p in zip(samples, scores, strict=True) if not s.spam and p >= threshold)
    spam = sum(1 for s in samples if s.spam)
    ham = len(samples) - spam
    return Quality(threshold=threshold, precision=tp / (tp + fp) if tp + fp else 0.0,
                   recall=tp / spam if spam else 0.0, fpr=fp / ham if ham else 0.0,
                   folds=folds)


def train(stored: Sequence[Sample], seeds: Sequence[Sample], *, threshold: float, now: int,
          validate: bool = True) -> Model:
    """A model trained on ``stored`` plus ``seeds`` (pure computation: run it off the loop).

    With ``validate``, the stored samples are also scored by ``FOLDS``-fold
    cross-validation (seeds always in the training folds) and the model keeps the
    figures at ``threshold``.
    """
    quality: Quality | None = None
    if validate and len({s.spam for s in stored}) == 2 and len(stored) >= 2 * FOLDS:
        quality, _ = cross_validate(stored, threshold=threshold, folds=FOLDS, extra=seeds)
    texts = {s.text for s in stored}
    return fit(_unique(stored), now=now, quality=quality,
               extra=_unique([s for s in seeds if s.text not in texts]),
               extra_weight=SEED_WEIGHT if stored else 1.0)


def _unique(samples: Sequence[Sample]) -> list[Sample]:
    """One sample per text, the first label given winning."""
    seen: dict[str, Sample] = {}
    for sample in samples:
        seen.setdefault(sample.text, sample)
    return list(seen.values())
