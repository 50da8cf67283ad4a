"""What the classifier reads: every character, pair of neighbours and pair of characters
two apart of the lightly folded text, hashed into a fixed number of buckets."""

from __future__ import annotations

import numpy as np

from bot.core.normalize import FoldTable

# Digits carry the shape of a price or a phone number, not their value.
_DIGITS = str.maketrans({str(d): "0" for d in range(10)})


class _ClassifierTable(FoldTable):
    """The light fold, with every digit read as 0 and every space as one blank: one
    ``str.translate`` does the whole form (measured: half the cost of three passes)."""

    def __init__(self) -> None:
        super().__init__(light=True)
        for code in range(128):
            self[code] = self._adjust(self[code])

    @staticmethod
    def _adjust(folded: str) -> str:
        folded = folded.translate(_DIGITS)
        return " " if folded and folded.isspace() else folded

    def __missing__(self, code: int) -> str:
        folded = self._adjust(super().__missing__(code))
        self[code] = folded
        return folded


_TABLE = _ClassifierTable()
# Past this many characters a message says nothing new about being spam; the cap bounds
# the cost of a hostile 64 KB push.
MAX_CHARS = 1000
FEATURES = "hashed-char-1-2-skip-grams/light-fold/v3"  # stored with a model: a change retrains
# 2**20 buckets: the dev file's 150,000 distinct grams share one 13% of the time (as many
# as chance would), and a table of float32 weights is 4 MB. Measured: 2**22 buckets score
# no better.
BUCKET_BITS = 20
BUCKETS = 1 << BUCKET_BITS
# Neighbours (a, b) are keyed a * _PAIR + b (mod 2**32) and a, b two apart a * _PAIR - b,
# so one multiplication serves both; a key's bucket is the top bits of key * _SPREAD. Both
# constants are odd and far from a power of two (2**32 / golden ratio, murmur3's), so near
# code points land far apart: all in uint32, a few numpy calls a text. (A prime modulus
# instead costs 1.6 us more at 500 characters; a small _PAIR made 16% of grams collide.)
_PAIR = np.uint32(0x9E3779B1)
_SPREAD = np.uint32(0x85EBCA6B)
_SHIFT = np.uint32(32 - BUCKET_BITS)
_BIGRAMS = tuple(slice(i, i + 2) for i in range(MAX_CHARS))


def classifier_form(text: str) -> str:
    """The text as the model reads it: folded for look-alikes, case, traditional Chinese
    and invisible characters as for matching, but with punctuation kept, spaces collapsed
    to one and every digit read as 0.

    Measured on the dev set: the matching form, which drops punctuation and spaces,
    loses 0.2 of recall at 0.5% FPR; punctuation is how a review reads unlike an advert.
    """
    form = text[:MAX_CHARS].translate(_TABLE)
    if "  " in form or form[:1] == " " or form[-1:] == " ":
        form = " ".join(form.split())
    return form[:MAX_CHARS]  # folding can lengthen a text: the grams stop here too


def buckets(form: str) -> np.ndarray:
    """The bucket of every gram of ``form``: its n characters, its n - 1 pairs of
    neighbours, then its n - 2 pairs of characters two apart, in the order of
    :func:`grams`.

    Measured on the dev file (5-fold, with the rules, 3 fold seeds): the pairs two apart
    ("加_信" in "加V信", "加微信" and "加.信") raise recall 0.005 at the same false
    positives, for 1.6 us a 100-character text; 3-grams do as well and cost as much, both
    together no better.
    """
    # the fold drops lone surrogates; should one get through, it is a code point, not a
    # UnicodeEncodeError on the hot path
    points = np.frombuffer(form.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    spread = points * _PAIR
    keys = np.concatenate((points, spread[:-1] + points[1:], spread[:-2] - points[2:]))
    return (keys * _SPREAD) >> _SHIFT


def distinct_buckets(form: str) -> np.ndarray:
    """The distinct buckets of ``form``'s grams, ascending: what the model weighs.

    Measured (100 characters, 1-2-grams): 8 us, where meeting the distinct known grams
    through an Aho-Corasick automaton took 23 us and ``np.unique`` 18 us. Every numpy call
    costs about 0.4 us however short the text: they are kept few.
    """
    ordered = np.sort(buckets(form))
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def grams(form: str) -> list[str]:
    """Every gram of ``form`` by name, in the order of :func:`buckets`; a pair two apart
    is named with "_" between its characters."""
    pairs = map(form.__getitem__, _BIGRAMS[:max(len(form) - 1, 0)])
    return [*form, *pairs, *map("{}_{}".format, form, form[2:])]
