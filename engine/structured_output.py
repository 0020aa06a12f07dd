"""What a request asks its output to look like: the one typed form every front end builds.

The HTTP routes turn `response_format`, vLLM's `structured_outputs` (and the older `guided_*` fields),
SGLang's `json_schema` / `regex` / `ebnf`, and forced tool calls into one of these; the LLM lane compiles
it with the grammar engine (cached by value) and masks each constrained row's logits with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StructuredKind = Literal["json_schema", "json_object", "regex", "choice", "grammar", "structural_tag"]


@dataclass(frozen=True)
class StructuredOutput:
    kind: StructuredKind
    # json_schema: the schema as canonical JSON text (sort_keys, so equal schemas share a compiled grammar);
    # json_object: "" (any JSON object); regex: the pattern; choice: a JSON list of the allowed strings;
    # grammar: EBNF (GBNF) or Lark text; structural_tag: vLLM's structural-tag object as JSON text.
    spec: str
    # Reasoning models: the constraint starts once the output contains this text (e.g. "</think>");
    # None: it applies from the first generated token.
    start_after: str | None = None
