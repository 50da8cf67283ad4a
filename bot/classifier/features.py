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
# Each character c0 of the form, with the two after it (c1, c2; past the end, _END), gives
# three keys: itself, c0 * _PAIR + c1 and c0 * _PAIR - c2 (mod 2**32); a key's bucket is
# the top bits of key * _SPREAD. Both constants are odd and far from a power of two
# (2**32 / golden ratio, murmur3's), so near code points land far apart. The products are
# linear, so one integer matrix product of the windows (c0, c1, c2) by _KEYS gives every
# key already spread. (A prime modulus instead cost 1.6 us more at 500 characters; a
# small _PAIR made 16% of grams collide, not 13%.)
_PAIR = 0x9E3779B1
_SPREAD = 0x85EBCA6B
_MASK = (1 << 32) - 1
_KEYS = np.array([[_SPREAD, _PAIR * _SPREAD & _MASK, _PAIR * _SPREAD & _MASK],
                  [0, _SPREAD, 0],
                  [0, 0, -_SPREAD & _MASK]], dtype=np.uint32)
_SHIFT = np.uint32(32 - BUCKET_BITS)
# The end of the text, read as the one or two characters after the last ones: a pair or
# a pair two apart that ends the text is a gram of its own (never code point 0, which
# would make the two kinds one).
_END = "\x03"


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
    """The bucket of every gram of ``form``, in the order of :func:`grams`: per character,
    itself, the pair it starts and the pair two apart it starts (the last ones reach the
    end of the text).

    Measured on the dev file (5-fold, with the rules, 3 fold seeds): the pairs two apart
    ("加_信" in "加V信", "加微信" and "加.信") raise recall 0.005 at the same false
    positives, for 1.6 us a 100-character text; 3-grams do as well and cost as much, both
    together no better.
    """
    # the fold drops lone surrogates; should one get through, it is a code point, not a
    # UnicodeEncodeError on the hot path
    points = (form + _END + _END).encode("utf-32-le", "surrogatepass")
    windows = np.ndarray((len(form), 3), dtype=np.uint32, buffer=points, strides=(4, 4))
    return ((windows @ _KEYS) >> _SHIFT).reshape(-1)


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
    is named with "_" between its characters, the end of the text "$"."""
    # zip stops at the last character of the form: the padding only fills in the end
    return [name for first, second, third in zip(form, form[1:] + "$", form[2:] + "$$",
                                                 strict=False)
            for name in (first, first + second, f"{first}_{third}")]
