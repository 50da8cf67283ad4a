"""The keyword automaton runs over UTF-8 bytes; hits map back to character offsets."""

from __future__ import annotations

from bot.rules.compiled import as_bytes, char_offsets


def test_byte_offsets_map_back_to_characters() -> None:
    text = "a加b👍c"
    offsets = char_offsets(text)
    assert len(offsets) == len(as_bytes(text)) + 1
    assert offsets == [0, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5]
    haystack = as_bytes(text)
    start = haystack.index(as_bytes("b👍"))
    stop = start + len(as_bytes("b👍"))
    assert text[offsets[start]:offsets[stop]] == "b👍"
