"""Compile a StructuredOutput into an llguidance grammar, once per (kind, spec).

`grammar_text` and `check` need no tokenizer: front ends call `check` (through engine/structured_output.py)
before a request starts streaming, so a bad schema is a 400. `GrammarCompiler` builds, per (kind, spec), a
matcher at the grammar's start on the model's tokenizer; each sequence takes a copy of it (about 1 µs).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import llguidance
import llguidance.hf
from llguidance import LLMatcher, LLTokenizer, StructTag
from llguidance.gbnf_to_lark import GbnfToLarkError, any_to_lark

from engine.errors import InvalidParameter
from engine.structured_output import StructuredOutput

# Compact JSON with one space after ',' and ':', and no free whitespace: a small model cannot wander off
# into endless newlines, and the output still reads like json.dumps. A schema's "x-guidance" may override.
JSON_OPTIONS: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT = '{"type": "object"}'
MAX_ERROR_CHARS = 600
CACHE_SIZE = 256

WHAT = {
    "json_schema": "JSON schema",
    "json_object": "JSON object format",
    "regex": "regex",
    "choice": "choice list",
    "grammar": "grammar",
    "structural_tag": "structural tag",
}


def _invalid(structured: StructuredOutput, problem: str) -> InvalidParameter:
    problem = problem.strip()
    if len(problem) > MAX_ERROR_CHARS:
        problem = problem[:MAX_ERROR_CHARS] + "..."
    return InvalidParameter(
        structured.param or structured.kind, f"the {WHAT[structured.kind]} cannot be compiled: {problem}"
    )


def _choice_grammar(structured: StructuredOutput) -> str:
    try:
        choices = json.loads(structured.spec)
    except ValueError:
        choices = None
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise _invalid(structured, "choices must be a non-empty list of non-empty strings")
    return LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in choices))


def _structural_tag_grammar(structured: StructuredOutput) -> str:
    """vLLM's structural tag: {"structures": [{"begin", "schema", "end"}], "triggers": [...]}. Free text,
    and wherever a trigger starts a structure's `begin`, its schema up to `end`."""
    try:
        tag = json.loads(structured.spec)
        triggers = list(tag["triggers"])
        tags = []
        for s in tag["structures"]:
            trigger = next((t for t in triggers if s["begin"].startswith(t)), None)
            if trigger is None:
                raise ValueError(f"no trigger starts the begin string {s['begin']!r}")
            tags.append(
                StructTag(trigger=trigger, begin=s["begin"], grammar=s.get("schema", {}), end=s["end"])
            )
        return StructTag.to_grammar(tags, assume_special=False)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise _invalid(structured, f"expected {{'structures': [{{'begin', 'schema', 'end'}}], 'triggers': [...]}}"
                       f" ({exc})") from None  # fmt: skip


def grammar_text(structured: StructuredOutput) -> str:
    """The llguidance grammar for a request's constraint (not yet checked). Raises InvalidParameter for a
    spec that is not even the right shape (a schema that is not a JSON object, a grammar that will not parse)."""
    kind, spec = structured.kind, structured.spec
    try:
        if kind in ("json_schema", "json_object"):
            return LLMatcher.grammar_from_json_schema(spec or ANY_OBJECT, defaults=JSON_OPTIONS)
        if kind == "regex":
            return LLMatcher.grammar_from_regex(spec)
        if kind == "grammar":
            return LLMatcher.grammar_from_lark(any_to_lark(spec))  # Lark as is; GBNF/EBNF converted
    except (ValueError, GbnfToLarkError) as exc:
        raise _invalid(structured, str(exc)) from None
    if kind == "choice":
        return _choice_grammar(structured)
    return _structural_tag_grammar(structured)


def _checked(structured: StructuredOutput, tokenizer: LLTokenizer | None) -> str:
    grammar = grammar_text(structured)
    error = LLMatcher.validate_grammar(grammar, tokenizer)
    if error:
        raise _invalid(structured, error)
    return grammar


class _LRU:
    """A thread-safe LRU map: the event loop adds, the inference thread reads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_checked_specs = _LRU(CACHE_SIZE)


def check(structured: StructuredOutput) -> None:
    """Raise InvalidParameter if the constraint cannot compile (no tokenizer needed; cached)."""
    key = (structured.kind, structured.spec)
    if _checked_specs.get(key) is None:
        _checked(structured, None)
        _checked_specs.put(key, True)


class GrammarCompiler:
    """Compiles each (kind, spec) once on the model's tokenizer; `compile` returns a matcher at the
    grammar's start, which callers copy (never advance)."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, eos_token_ids: list[int]) -> None:
        # Wrapping the tokenizer takes about a second: it starts now, off the loading thread's critical path,
        # and the first constrained request waits for it if it is not done.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-tokenizer")
        self._tokenizer: Future[LLTokenizer] = self._pool.submit(
            llguidance.hf.from_tokenizer, hf_tokenizer, vocab_size, eos_token_ids
        )
        self._pool.shutdown(wait=False)
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self._compiled = _LRU(CACHE_SIZE)

    @property
    def tokenizer(self) -> LLTokenizer:
        return self._tokenizer.result()

    def compile(self, structured: StructuredOutput) -> LLMatcher:
        key = (structured.kind, structured.spec)
        template = self._compiled.get(key)
        if template is None:
            try:
                tokenizer = self.tokenizer
            except Exception as exc:  # a slow (non-Rust) tokenizer: llguidance needs a fast one
                raise InvalidParameter(
                    structured.param or structured.kind,
                    f"this model's tokenizer does not support constrained decoding ({exc})",
                ) from None
            template = LLMatcher(tokenizer, grammar_text(structured), log_level=0)
            if template.is_error():
                raise _invalid(structured, template.get_error())
            self._compiled.put(key, template)
        return template
