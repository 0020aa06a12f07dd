"""Tool calls read from a reply as it grows, one reader per tool_choice mode. Each takes the reply's answer
text (after any thinking) in pieces and returns (text to send as content, call pieces). A call's first
piece carries its id and name, the rest its argument text; a call's pieces join into its arguments.

"auto" holds back whatever may be a call until the reply is complete, then parses it (the model's text
is not guaranteed to be a well-formed call, and a streamed call cannot be taken back); forced calls are
guaranteed well-formed by their grammar, so their arguments stream as the model writes them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from http_api.tool_parsers.base import ToolParser
from http_api.tool_parsers.forced import scan_calls


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class CallPiece:
    index: int
    id: str | None = None  # with the name, on a call's first piece
    name: str | None = None
    arguments: str = ""


class CallReader(Protocol):
    def feed(self, text: str, final: bool) -> tuple[str, list[CallPiece]]: ...


def opening(index: int, name: str) -> CallPiece:
    return CallPiece(index, new_call_id(), name)


@dataclass
class AutoCalls:
    """tool_choice "auto": text streams up to where a call may begin; calls come out at the end."""

    parser: ToolParser
    names: set[str]
    parallel: bool = True
    text: str = ""
    sent: int = 0

    def feed(self, text: str, final: bool) -> tuple[str, list[CallPiece]]:
        self.text += text
        if not final:
            safe = max(self.sent, self.parser.content_prefix_len(self.text))
            out, self.sent = self.text[self.sent : safe], safe
            return out, []
        content, calls = self.parser.extract(self.text, self.names)
        if not calls:
            return self.text[self.sent :], []
        pieces: list[CallPiece] = []
        for i, call in enumerate(calls if self.parallel else calls[:1]):
            pieces += [opening(i, call.name), CallPiece(i, arguments=call.arguments)]
        return content[self.sent :], pieces


@dataclass
class ForcedCalls:
    """tool_choice "required" or named: the answer is calls only, written to a grammar
    (http_api/tool_parsers/forced.py); each call's arguments stream as the model writes them."""

    text: str = ""
    sent: list[int] = field(default_factory=list)  # argument characters sent, per call

    def feed(self, text: str, final: bool) -> tuple[str, list[CallPiece]]:
        self.text += text
        pieces: list[CallPiece] = []
        for i, call in enumerate(scan_calls(self.text)):
            if call.name is None:
                break
            if i == len(self.sent):
                self.sent.append(0)
                pieces.append(opening(i, call.name))
            if len(call.arguments) > self.sent[i]:
                pieces.append(CallPiece(i, arguments=call.arguments[self.sent[i] :]))
                self.sent[i] = len(call.arguments)
        return "", pieces
