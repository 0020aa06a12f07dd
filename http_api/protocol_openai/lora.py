"""vLLM's runtime LoRA bodies: POST /v1/load_lora_adapter and /v1/unload_lora_adapter (the replies are
plain text on success, the OpenAI error shape otherwise)."""

from __future__ import annotations

from http_api.protocol_openai.common import RequestModel


class LoadLoRAAdapterRequest(RequestModel):
    lora_name: str
    lora_path: str
    load_inplace: bool = False  # vLLM: replace an adapter of the same name instead of refusing


class UnloadLoRAAdapterRequest(RequestModel):
    lora_name: str
    lora_int_id: int | None = None  # vLLM's internal id: accepted, the name decides
