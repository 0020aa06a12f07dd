"""engine/tts/segmenter.py: where text is cut into pieces to speak (pure Python, no model)."""

from __future__ import annotations

from engine.tts.segmenter import ClauseSegmenter, speakable_text, split_sentences


def _stream(text: str, segmenter: ClauseSegmenter, step: int = 3) -> list[tuple[int, str]]:
    """Feed `text` in small deltas; (characters fed when the piece came out, piece) for every piece."""
    pieces: list[tuple[int, str]] = []
    for start in range(0, len(text), step):
        pieces += [(start + step, piece) for piece in segmenter.feed(text[start : start + step])]
    pieces += [(len(text), piece) for piece in segmenter.flush()]
    return pieces


def test_split_sentences_keeps_numbers_abbreviations_and_initials_together() -> None:
    text = "Dr. Smith paid $3.50 for it, e.g. a coffee. J. R. R. Tolkien wrote books!  Really?\nYes"
    assert split_sentences(text) == [
        "Dr. Smith paid $3.50 for it, e.g. a coffee.",
        "J. R. R. Tolkien wrote books!",
        "Really?",
        "Yes",
    ]


def test_split_sentences_drops_unspeakable_pieces_and_handles_empty_text() -> None:
    assert split_sentences("") == []
    assert split_sentences("  ... \n ** \n") == []
    assert split_sentences("1. First item.\n2. Second item.") == ["1. First item.", "2. Second item."]


def test_an_over_long_sentence_is_cut_at_clauses_then_at_spaces() -> None:
    clause = "the quick brown fox jumps over the lazy dog again and again"
    sentence = ", ".join([clause] * 8) + "."
    pieces = split_sentences(sentence, max_chars=150)
    assert len(pieces) > 1 and all(len(p) <= 150 for p in pieces)
    assert " ".join(pieces) == sentence
    words = " ".join(["word"] * 200)
    pieces = split_sentences(words, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and " ".join(pieces) == words


def test_streamed_pieces_come_out_as_soon_as_they_are_complete() -> None:
    text = "The capital of France is Paris. It has been the capital for centuries."
    pieces = _stream(text, ClauseSegmenter())
    assert [p for _, p in pieces] == [
        "The capital of France is Paris.",
        "It has been the capital for centuries.",
    ]
    # The first sentence is out once the space after its period arrives, long before the text ends.
    assert pieces[0][0] <= text.index("Paris.") + len("Paris. ") + 3


def test_the_first_clause_is_cut_early_and_later_clauses_only_when_long() -> None:
    text = (
        "Well, the capital of France, as you may know, is Paris, a city on the Seine, "
        "and it has been, for a long time, the seat of government; it is also the largest city."
    )
    pieces = [p for _, p in _stream(text, ClauseSegmenter(first_clause_chars=20, clause_chars=60))]
    # "Well," is too short to speak alone; the first cut comes at the first comma past 20 characters.
    assert pieces[0] == "Well, the capital of France,"
    assert all(len(p) >= 20 for p in pieces[1:-1])
    assert " ".join(pieces) == text
    assert len(pieces) < text.count(",") + 2  # short clauses were kept together


def test_pieces_are_the_same_however_the_text_is_streamed() -> None:
    text = "Hello there! I'm fine, thanks for asking; how about you? It's 3.5 degrees, i.e. cold.\n\nBye."
    expected = [p for _, p in _stream(text, ClauseSegmenter(), step=len(text))]
    for step in (1, 2, 5, 17):
        assert [p for _, p in _stream(text, ClauseSegmenter(), step=step)] == expected
    assert expected[-1] == "Bye."


def test_pending_text_and_flush() -> None:
    segmenter = ClauseSegmenter()
    assert segmenter.feed("Paris is the capital") == []
    assert segmenter.pending_text == "Paris is the capital"
    assert segmenter.flush() == ["Paris is the capital"]
    assert segmenter.pending_text == "" and segmenter.flush() == []


def test_split_sentences_can_cut_the_first_sentence_early() -> None:
    text = "Well, after a long and careful look at the question, the answer is yes. Then, we go on, and on."
    assert split_sentences(text, first_clause_chars=20) == [
        "Well, after a long and careful look at the question,",
        "the answer is yes.",
        "Then, we go on, and on.",
    ]


def test_speakable_text_drops_markdown_a_voice_would_read_aloud() -> None:
    text = "## The answer\n**Paris** is the `capital`:\n- see [the map](https://example.com/map)\n> _quoted_ text"
    assert speakable_text(text) == "The answer Paris is the capital : see the map quoted text"
    assert speakable_text("snake_case stays, 3*4 too?") == "snake_case stays, 3 4 too?"
