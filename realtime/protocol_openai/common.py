"""What every OpenAI realtime model shares: ids, the client-model base with field reporting, errors."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class ClientModel(BaseModel):
    model_config = ConfigDict(extra="allow")


def unsupported_fields(model: BaseModel, prefix: str) -> list[str]:
    """Dotted names of keys we do not implement that were given a non-null value, nested models included."""
    names: list[str] = []
    for key, value in (model.model_extra or {}).items():
        if value is not None:
            names.append(f"{prefix}.{key}")
    for key in model.model_fields_set:
        value = getattr(model, key)
        if isinstance(value, ClientModel):
            names.extend(unsupported_fields(value, f"{prefix}.{key}"))
        elif isinstance(value, list):
            for i, entry in enumerate(value):
                if isinstance(entry, ClientModel):
                    names.extend(unsupported_fields(entry, f"{prefix}.{key}[{i}]"))
    return names


class ServerEvent(BaseModel):
    event_id: str = Field(default_factory=lambda: new_id("event"))


class ErrorDetail(BaseModel):
    type: str = "invalid_request_error"
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail
