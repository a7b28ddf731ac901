"""The streaming `[n]` marker filter and the sentence splitting citations are checked on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pipelines.citations import MarkerFilter, Span, sentences, strip_markers, windows


def run(chunks: Sequence[str], sources: int = 3) -> tuple[MarkerFilter, list[str]]:
    """Feed the chunks one by one; what each returned, the flush last."""
    markers = MarkerFilter(range(1, sources + 1))
    shown = [markers.feed(c) for c in chunks]
    shown.append(markers.flush())
    return markers, shown


def test_marker_split_across_tokens_is_held_then_shown_whole() -> None:
    markers, shown = run(["Venus ", "is ", "hot ", "[", "1", "]", "."])
    assert shown == ["Venus ", "is ", "hot ", "", "", "[1]", ".", ""]
    assert markers.text == "Venus is hot [1]."
    assert [(m.n, m.span) for m in markers.markers] == [(1, Span(13, 16))]
    assert markers.invalid == 0


def test_adjacent_and_grouped_markers_are_each_recorded() -> None:
    markers, shown = run(["A [1][2] b [1, 2", "] c [2,", "3]."])
    text = "".join(shown)
    assert text == markers.text == "A [1][2] b [1, 2] c [2,3]."
    found = [(m.n, text[m.span.start : m.span.end]) for m in markers.markers]
    assert found == [
        (1, "[1]"),
        (2, "[2]"),
        (1, "[1, 2]"),
        (2, "[1, 2]"),
        (2, "[2,3]"),
        (3, "[2,3]"),
    ]


def test_out_of_range_marker_is_removed_and_counted() -> None:
    markers, shown = run(["Venus ", "is ", "hot ", "[", "1", "]", " and ", "[7]", "."])
    assert "".join(shown) == "Venus is hot [1] and ."
    assert "[7]" not in "".join(shown)
    assert markers.invalid == 1
    assert [m.n for m in markers.markers] == [1]


def test_group_keeps_only_its_valid_numbers() -> None:
    markers, shown = run(["Hot [1, 7", ", 2]", " and [0][9]."])
    assert "".join(shown) == "Hot [1, 2] and ."
    assert markers.invalid == 3
    span = markers.markers[0].span
    assert markers.text[span.start : span.end] == "[1, 2]"


@pytest.mark.parametrize(
    ("chunks", "text"),
    [
        (["a [a] b"], "a [a] b"),
        (["x [", "12345678", "] y"], "x [12345678] y"),
        (["see [1", "23", "4] z"], "see [1234] z"),
        (["list[", "i]"], "list[i]"),
        (["the end ["], "the end ["),
        (["the end [2"], "the end [2"),
    ],
)
def test_brackets_that_are_not_markers_are_text(chunks: list[str], text: str) -> None:
    markers, shown = run(chunks)
    assert "".join(shown) == text
    assert markers.markers == [] and markers.invalid == 0


def test_held_back_text_is_bounded() -> None:
    """A `[` followed by more than a number's digits that cannot be a marker is let go at
    once, not held to the end of the answer."""
    markers = MarkerFilter([1])
    assert markers.feed("[1234") == "[1234"
    assert markers.feed("[abc") == "[abc"
    assert markers.feed("[") == ""
    assert markers.feed("12") == ""
    assert markers.feed("x") == "[12x"


def test_answer_span_offsets_point_into_the_shown_text() -> None:
    markers, shown = run(["Mars [9] is red [", "2]. Venus is hot.[1] Done."])
    text = "".join(shown)
    assert text == "Mars  is red [2]. Venus is hot.[1] Done."
    spans = [text[m.span.start : m.span.end] for m in markers.markers]
    assert spans == ["[2]", "[1]"]
    assert [text[s.start : s.end] for s in sentences(text)] == [
        "Mars  is red [2].",
        "Venus is hot.[1]",
        "Done.",
    ]


def test_sentences_keep_abbreviations_numbers_and_markers_together() -> None:
    text = "Venus is hot, e.g. 464 C. Its clouds (Fig. 2) are acid. [1]\n\n- Mars [2]\n- Moon"
    assert [text[s.start : s.end] for s in sentences(text)] == [
        "Venus is hot, e.g. 464 C.",
        "Its clouds (Fig. 2) are acid. [1]",
        "- Mars [2]",
        "- Moon",
    ]


def test_windows_are_sentences_then_adjacent_pairs() -> None:
    text = "One. Two! Three?"
    assert [text[w.start : w.end] for w in windows(text)] == [
        "One.",
        "Two!",
        "Three?",
        "One. Two!",
        "Two! Three?",
    ]
    assert windows("   ") == []


def test_strip_markers_leaves_the_claim() -> None:
    assert strip_markers("Venus is hot [1][2] and dry [1, 3].") == "Venus is hot and dry ."
