"""What a request asks its output to look like: the one typed form every front end builds.

The HTTP routes turn `response_format`, vLLM's `structured_outputs` (and the older `guided_*` fields),
SGLang's `json_schema` / `regex` / `ebnf`, and forced tool calls into one of these; the LLM lane compiles
it with the grammar engine (engine/llm/grammar/, llguidance; cached by kind and spec) and masks each
constrained row's logits with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

StructuredKind = Literal["json_schema", "json_object", "regex", "choice", "grammar", "structural_tag"]


@dataclass(frozen=True)
class StructuredOutput:
    kind: StructuredKind
    # json_schema: the schema as compact JSON text, key order kept (properties are generated in the order
    # the schema lists them; equal texts share a compiled grammar); json_object: "" (any JSON object);
    # regex: the pattern; choice: a JSON list of the allowed strings; grammar: Lark (a `start:` rule,
    # %json{...} allowed inline) or EBNF/GBNF (`root ::= ...`); structural_tag: vLLM's structural-tag
    # object ({"structures": [{"begin", "schema", "end"}], "triggers": [...]}) as JSON text.
    spec: str
    # Reasoning models: the constraint starts once the output contains this text (e.g. "</think>");
    # None: it applies from the first generated token.
    start_after: str | None = None
    # The request field it came from, named in the 400 a spec that cannot compile gets (None: the kind)
    param: str | None = field(default=None, compare=False)


def check_structured_output(structured: StructuredOutput) -> None:
    """Raise InvalidParameter(param, what is wrong) if the constraint cannot compile. Needs no model: front
    ends call it before a reply starts streaming; the LLM lane compiles again (cached) when the request is
    added."""
    from engine.llm.grammar.compiler import check  # the grammar engine loads only when it is used

    check(structured)
