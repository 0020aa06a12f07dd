"""The one home for splitting text into pieces to speak: whole texts (HTTP) and streamed LLM replies.

A piece ends at a sentence end (. ! ? followed by whitespace), a line break, or, once the piece is long
enough that waiting for the sentence end would cost latency, at a clause boundary (, ; : followed by
whitespace). A piece longer than `max_chars` with no such boundary is cut at its last space. A boundary
counts only once the character after it has arrived, so "3.5" or "e.g." mid-stream never cut.
"""

from __future__ import annotations

import re

# Punctuation that may end a piece, with closing quotes/brackets, then the whitespace that confirms it.
_BOUNDARY = re.compile(r"(?:[.!?\u2026]+[\"'\u201d\u2019)\]]*|[,;:])(?=\s)|\n")
_SENTENCE_END = frozenset(".!?\u2026")
# Words whose trailing period is not a sentence end.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "approx", "no", "fig", "mt"}
)
_SPEAKABLE = re.compile(r"\w")
# Markdown that LLM replies carry and a phonemizer would read aloud ("asterisk", "hash").
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_LINE_MARKUP = re.compile(r"^[ \t]*(?:#{1,6}|[-*+]|>)[ \t]+", re.MULTILINE)
_INLINE_MARKUP = re.compile(r"[*`~|]+|(?<!\w)_+|_+(?!\w)")

FIRST_CLAUSE_CHARS = 20  # the first piece of a reply: short, so its audio starts early
CLAUSE_CHARS = 60  # later pieces: audio is already playing, longer clauses sound more natural
MAX_CHARS = 240  # no piece is longer than this


def _is_abbreviation(piece_before_period: str) -> bool:
    words = piece_before_period.split()
    if not words:
        return False
    word = words[-1].lstrip("\"'(\u201c\u2018[")
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial: "J. R. R. Tolkien"
    if word.isdigit() and len(words) == 1:
        return True  # a list marker at the start of a piece: "1. First"
    return word.lower() in _ABBREVIATIONS


def _next_cut(text: str, clause_chars: int, max_chars: int) -> int | None:
    """Where the first piece of `text` ends (an index into it), or None when more text is needed."""
    for match in _BOUNDARY.finditer(text):
        mark = match.group()
        if mark == "\n":
            return match.end()
        if mark[0] in _SENTENCE_END:
            if mark[0] == "." and _is_abbreviation(text[: match.start()]):
                continue
            return match.end()
        if match.end() >= clause_chars:
            return match.end()
        if match.end() > max_chars:
            break
    if len(text) <= max_chars:
        return None
    space = text.rfind(" ", 0, max_chars)
    return space if space > 0 else max_chars


def speakable_text(text: str) -> str:
    """The text without the markdown a voice would otherwise pronounce: emphasis, code ticks, headings,
    bullets, quote marks and link targets. Words and sentence punctuation stay."""
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _LINE_MARKUP.sub("", text)
    return " ".join(_INLINE_MARKUP.sub(" ", text).split())


def _speakable(piece: str) -> bool:
    return bool(_SPEAKABLE.search(piece))


class ClauseSegmenter:
    """Cuts a streamed reply into pieces ready to speak as soon as each is complete.

    feed() each text delta and speak what it returns; flush() at the end of the reply for the rest.
    Pieces with nothing to pronounce (only punctuation, markup or whitespace) are dropped.
    """

    def __init__(
        self,
        first_clause_chars: int = FIRST_CLAUSE_CHARS,
        clause_chars: int = CLAUSE_CHARS,
        max_chars: int = MAX_CHARS,
    ) -> None:
        self._first_clause_chars = first_clause_chars
        self._clause_chars = clause_chars
        self._max_chars = max_chars
        self._buffer = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while True:
            self._buffer = self._buffer.lstrip()
            clause_chars = self._clause_chars if self._emitted else self._first_clause_chars
            cut = _next_cut(self._buffer, clause_chars, self._max_chars)
            if cut is None:
                return pieces
            piece = self._buffer[:cut].strip()
            self._buffer = self._buffer[cut:]
            if _speakable(piece):
                pieces.append(piece)
                self._emitted += 1

    def flush(self) -> list[str]:
        """The rest of the reply (the text ended): its last pieces, cut by the same rules."""
        pieces = self.feed("\n") if self._buffer else []
        self._buffer = ""
        return pieces

    @property
    def pending_text(self) -> str:
        """Text fed but not yet returned as a piece."""
        return self._buffer


def split_sentences(
    text: str, max_chars: int = MAX_CHARS, first_clause_chars: int | None = None
) -> list[str]:
    """A whole text's sentences (and line-separated pieces); an over-long sentence is cut at clause
    boundaries past a third of `max_chars`, or at a space past `max_chars`. With `first_clause_chars`,
    the first sentence is cut at its first clause boundary past that many characters (audio that streams
    starts sooner)."""
    clause_chars = max_chars // 3
    segmenter = ClauseSegmenter(
        first_clause_chars=first_clause_chars or clause_chars, clause_chars=clause_chars, max_chars=max_chars
    )
    return segmenter.feed(text) + segmenter.flush()
