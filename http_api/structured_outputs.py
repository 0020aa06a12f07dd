"""The one place request fields become a StructuredOutput (engine/structured_output.py).

OpenAI's `response_format` (json_object, json_schema), vLLM's `structured_outputs` object and its older
`guided_*` spellings (chat and completions), and SGLang's `json_schema` / `regex` / `ebnf` / `structural_tag`
(/generate). Each builder checks that the constraint compiles, so a bad schema is a 400 before any reply
starts streaming.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import InvalidParameter
from engine.structured_output import StructuredKind, StructuredOutput, check_structured_output
from http_api.errors import bad_request, invalid_parameter


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class JSONSchemaFormat(_Strict):
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None  # the schema is always enforced; strict also closes objects (see below)


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class StructuredOutputsParams(_Strict):
    """vLLM's `structured_outputs`: exactly one of json, regex, choice, grammar, json_object,
    structural_tag, and options for JSON."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: dict[str, Any] | str | None = None
    disable_fallback: bool = False  # there is one grammar engine and no fallback
    disable_any_whitespace: bool = False  # JSON never has free whitespace here (one space after , and :)
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None


def schema_text(schema: dict[str, Any] | str, param: str, **options: Any) -> str:
    """A JSON schema as compact text, key order kept (properties are generated in that order).
    options: disable_additional_properties, whitespace_pattern (vLLM's)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise bad_request(f"{param} is not valid JSON: {exc}", param=param) from None
    if not isinstance(schema, dict):
        raise bad_request(f"{param} must be a JSON schema object", param=param)
    if options.get("disable_additional_properties"):
        schema = _closed(schema)
    if pattern := options.get("whitespace_pattern"):
        schema = {**schema, "x-guidance": {"whitespace_flexible": True, "whitespace_pattern": pattern}}
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


def _closed(node: Any) -> Any:
    """Every object schema without `additionalProperties` gets `false` (vLLM's
    disable_additional_properties)."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items()}
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def checked(structured: StructuredOutput) -> StructuredOutput:
    """The constraint, once it is known to compile; else a 400 naming its field and the problem."""
    try:
        check_structured_output(structured)
    except InvalidParameter as exc:
        raise invalid_parameter(exc) from exc
    return structured


def _made(kind: StructuredKind, spec: str, param: str) -> StructuredOutput:
    return checked(StructuredOutput(kind, spec, param=param))


def from_response_format(fmt: ResponseFormat) -> StructuredOutput | None:
    if fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return _made("json_object", "", "response_format")
    if fmt.json_schema is None:
        raise bad_request(
            "response_format of type 'json_schema' needs a 'json_schema' object", param="response_format"
        )
    if fmt.json_schema.schema_ is None:
        return _made("json_object", "", "response_format.json_schema")
    # strict (OpenAI): objects take no properties beyond those listed, as if each said
    # "additionalProperties": false (OpenAI requires a strict schema to say it; here it is implied)
    param = "response_format.json_schema.schema"
    strict = bool(fmt.json_schema.strict)
    return _made(
        "json_schema",
        schema_text(fmt.json_schema.schema_, param, disable_additional_properties=strict),
        param,
    )


def from_structured_outputs(so: StructuredOutputsParams, guided: bool = False) -> StructuredOutput:
    """vLLM's structured_outputs; with `guided`, built from the guided_* fields (errors name those)."""
    given = [
        name
        for name, value in (
            ("json", so.json_), ("regex", so.regex), ("choice", so.choice), ("grammar", so.grammar),
            ("json_object", so.json_object or None), ("structural_tag", so.structural_tag),
        )
        if value is not None
    ]  # fmt: skip
    if len(given) != 1:
        raise bad_request(
            "structured_outputs needs exactly one of json, regex, choice, grammar, json_object or "
            "structural_tag" + (f"; got {', '.join(given)}" if given else ""),
            param="structured_outputs",
        )
    name = given[0]
    param = f"guided_{name}" if guided else f"structured_outputs.{name}"
    if so.json_ is not None:
        options = {
            "disable_additional_properties": so.disable_additional_properties,
            "whitespace_pattern": so.whitespace_pattern,
        }
        return _made("json_schema", schema_text(so.json_, param, **options), param)
    if so.choice is not None:
        return _made("choice", json.dumps(so.choice), param)
    if so.structural_tag is not None:
        tag = so.structural_tag
        return _made("structural_tag", tag if isinstance(tag, str) else json.dumps(tag), param)
    if name == "json_object":
        return _made("json_object", "", param)
    return _made("regex" if name == "regex" else "grammar", so.regex or so.grammar or "", param)


class StructuredFields(_Strict):
    """The request fields chat and completions share for constrained output."""

    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsParams | None = None
    # vLLM's older spellings of structured_outputs
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    guided_whitespace_pattern: str | None = None
    guided_decoding_backend: str | None = None  # one engine here (llguidance); the name is not checked

    def _guided(self) -> StructuredOutputsParams | None:
        given = {
            name: value
            for name, value in (
                ("json", self.guided_json), ("regex", self.guided_regex), ("choice", self.guided_choice),
                ("grammar", self.guided_grammar),
            )
            if value is not None
        }  # fmt: skip
        if not given:
            return None
        if len(given) > 1:
            names = ", ".join(f"guided_{k}" for k in given)
            raise bad_request(
                f"give one structured-output constraint, not {names}", param=f"guided_{next(iter(given))}"
            )
        return StructuredOutputsParams(**given, whitespace_pattern=self.guided_whitespace_pattern)

    def structured_output(self) -> StructuredOutput | None:
        """The request's constraint, checked; None when it asks for none."""
        fmt = self.response_format if self.response_format and self.response_format.type != "text" else None
        guided = self._guided()
        if guided is not None and self.structured_outputs is not None:
            raise bad_request(
                "give structured_outputs or the guided_* fields, not both", param="structured_outputs"
            )
        if fmt is not None and (guided is not None or self.structured_outputs is not None):
            param = "structured_outputs" if self.structured_outputs is not None else "response_format"
            raise bad_request("response_format and structured_outputs cannot be given together", param=param)
        if fmt is not None:
            return from_response_format(fmt)
        if self.structured_outputs is not None:
            return from_structured_outputs(self.structured_outputs)
        return from_structured_outputs(guided, guided=True) if guided is not None else None


def from_sglang(
    where: str, json_schema: str | None, regex: str | None, ebnf: str | None, structural_tag: str | None
) -> StructuredOutput | None:
    """SGLang's /generate sampling_params: at most one of json_schema (JSON text), regex, ebnf,
    structural_tag. `where`: "sampling_params" or "sampling_params[i]"."""
    given = {
        name: value
        for name, value in (
            ("json_schema", json_schema), ("regex", regex), ("ebnf", ebnf), ("structural_tag", structural_tag),
        )
        if value is not None
    }  # fmt: skip
    if not given:
        return None
    if len(given) > 1:
        raise bad_request(
            f"give only one of json_schema, regex, ebnf or structural_tag, not {', '.join(given)}",
            param=f"{where}.{next(iter(given))}",
        )
    name, value = next(iter(given.items()))
    param = f"{where}.{name}"
    if name == "json_schema":
        return _made("json_schema", schema_text(value, param), param)
    kinds: dict[str, StructuredKind] = {
        "regex": "regex",
        "ebnf": "grammar",
        "structural_tag": "structural_tag",
    }
    return _made(kinds[name], value, param)


def from_text_format(fmt: dict[str, Any]) -> StructuredOutput | None:
    """The Responses API's `text.format`: {"type": "text"}, {"type": "json_object"}, or
    {"type": "json_schema", "name", "schema", "strict"} (flat, unlike chat's response_format)."""
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return _made("json_object", "", "text.format")
    if kind != "json_schema":
        raise bad_request(
            f"text.format type must be text, json_object or json_schema, not {kind!r}", "text.format"
        )
    schema = fmt.get("schema")
    if schema is None:
        raise bad_request("text.format of type 'json_schema' needs a 'schema'", param="text.format.schema")
    strict = bool(fmt.get("strict"))  # as chat's response_format: a strict schema's objects are closed
    schema_spec = schema_text(schema, "text.format.schema", disable_additional_properties=strict)
    return _made("json_schema", schema_spec, "text.format.schema")
