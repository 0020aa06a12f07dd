"""SGLang's native /generate request and response bodies (the subset a text-only engine can serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.sampling import SamplingParams
from http_api.errors import bad_request, unsupported
from http_api.protocol_openai.common import token_id_bias

DEFAULT_MAX_NEW_TOKENS = 128
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SGLangSamplingParams(StrictModel):
    max_new_tokens: int | None = None  # None: 128, or what is left of the context if less
    min_new_tokens: int = 0
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True  # accepted; the tokenizer decides
    no_stop_trim: bool = False
    logit_bias: dict[str, float] | None = None
    sampling_seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    n: int = 1
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    structural_tag: str | None = None
    custom_params: dict[str, Any] | None = None
    stream_interval: int | None = None

    def check_supported(self, where: str) -> None:
        if self.custom_params is not None:
            raise unsupported(f"{where}.custom_params")
        if self.n != 1:
            raise unsupported(f"{where}.n", "send a batch of prompts instead")

    def to_engine(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        bias = token_id_bias(self.logit_bias)
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            seed=self.sampling_seed,
            stop=stop,
            stop_token_ids=list(self.stop_token_ids or []),
            ignore_eos=self.ignore_eos,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            repetition_penalty=self.repetition_penalty,
            logit_bias=bias,
            logprobs=logprobs,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.no_stop_trim,
            min_tokens=self.min_new_tokens,
        )


class GenerateRequest(StrictModel):
    text: str | list[str] | None = None
    input_ids: list[int] | list[list[int]] | None = None
    sampling_params: SGLangSamplingParams | list[SGLangSamplingParams] | None = None
    rid: str | list[str] | None = None
    stream: bool = False
    return_logprob: bool = False
    top_logprobs_num: int = 0
    logprob_start_len: int = -1
    return_text_in_logprobs: bool = False
    log_metrics: bool = True  # accepted, ignored
    # Declared so they get a clear "not supported" instead of "unrecognized".
    image_data: Any | None = None
    audio_data: Any | None = None
    video_data: Any | None = None
    input_embeds: Any | None = None
    lora_path: str | list[str | None] | None = None  # a served LoRA adapter's name, per prompt if a list
    session_params: Any | None = None
    custom_logit_processor: Any | None = None
    return_hidden_states: bool = False

    def check_supported(self, reads_images: bool = False) -> None:
        for name in ("image_data", "audio_data", "video_data", "input_embeds"):
            if getattr(self, name) is not None and not (name == "image_data" and reads_images):
                raise unsupported(name, "the served model only reads text")
        if self.image_data is not None and self.text is None:
            raise unsupported("image_data", "send the prompt as text (with the model's image tokens)")
        for name in ("session_params", "custom_logit_processor"):
            if getattr(self, name) is not None:
                raise unsupported(name)
        if self.return_hidden_states:
            raise unsupported("return_hidden_states")
        if self.logprob_start_len not in (-1, 0) and self.return_logprob:
            raise unsupported("logprob_start_len", "input token logprobs are not computed")
        if not 0 <= self.top_logprobs_num <= 20:
            raise bad_request("top_logprobs_num must be between 0 and 20", param="top_logprobs_num")

    def images_for(self, i: int, count: int) -> list[tuple[str, str]]:
        """Prompt i's images as (media URL, param): SGLang's image_data is one image or a list of them for
        one prompt, and a list with an entry (one image or a list) per prompt for a batch. Each is a URL
        (http(s), data:, file://), a local file path or raw base64."""
        data = self.image_data
        if data is None:
            return []
        if self.is_batch:
            if not isinstance(data, list) or len(data) != count:
                raise bad_request(f"image_data must have one entry per prompt ({count})", param="image_data")
            data, where = data[i], f"image_data[{i}]"
        else:
            where = "image_data"
        items = data if isinstance(data, list) else [data] if data is not None else []
        out = []
        for j, item in enumerate(items):
            param = f"{where}[{j}]" if isinstance(data, list) else where
            if not isinstance(item, str) or not item:
                raise bad_request(f"{param} must be an image URL, file path or base64 string", param=param)
            out.append((sglang_image_url(item), param))
        return out

    def lora_for(self, i: int) -> str | None:
        if isinstance(self.lora_path, list):
            if len(self.lora_path) <= i:
                raise bad_request("lora_path has fewer entries than there are prompts", param="lora_path")
            return self.lora_path[i]
        return self.lora_path

    @property
    def is_batch(self) -> bool:
        if self.text is not None:
            return isinstance(self.text, list)
        return bool(self.input_ids) and isinstance(self.input_ids[0], list)

    def prompts(self) -> list[str | list[int]]:
        if (self.text is None) == (self.input_ids is None):
            raise bad_request("give exactly one of 'text' or 'input_ids'", param="text")
        if self.text is not None:
            prompts: list = [self.text] if isinstance(self.text, str) else list(self.text)
            param = "text"
        else:
            ids = self.input_ids or []
            prompts = list(ids) if ids and isinstance(ids[0], list) else [list(ids)]
            param = "input_ids"
        if not prompts or any(len(p) == 0 for p in prompts):
            raise bad_request(f"'{param}' must not be empty", param=param)
        return prompts

    def params_for(self, count: int) -> list[SGLangSamplingParams]:
        sp = self.sampling_params
        if isinstance(sp, list):
            if len(sp) != count:
                raise bad_request(
                    f"sampling_params has {len(sp)} entries for {count} prompts", param="sampling_params"
                )
            return sp
        return [sp or SGLangSamplingParams()] * count

    def rids(self, count: int) -> list[str | None]:
        if self.rid is None:
            return [None] * count
        rids = [self.rid] if isinstance(self.rid, str) else self.rid
        if len(rids) != count:
            raise bad_request(f"rid has {len(rids)} entries for {count} prompts", param="rid")
        return list(rids)


def sglang_image_url(item: str) -> str:
    """One image_data string as a media URL: URLs as they are, a file path as a file:// URL (served only
    under --allowed-local-media-path), anything else as base64 data (as SGLang tells them apart: a path
    ends with an image suffix; base64 may start with '/', as a JPEG's does)."""
    if item.split(":", 1)[0].lower() in ("http", "https", "data", "file"):
        return item
    if item.lower().endswith(IMAGE_FILE_SUFFIXES):
        return Path(item).absolute().as_uri()
    return "data:;base64," + item


class FinishReason(BaseModel):
    type: Literal["stop", "length", "abort"]
    matched: int | str | None = None
    length: int | None = None
    message: str | None = None


LogprobEntry = tuple[float, int, str | None]  # (logprob, token id, token text if asked for)


class MetaInfo(BaseModel):
    id: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None
    e2e_latency: float
    output_token_logprobs: list[LogprobEntry] | None = None
    output_top_logprobs: list[list[LogprobEntry]] | None = None


class GenerateResponse(BaseModel):
    text: str
    output_ids: list[int]
    meta_info: MetaInfo
    index: int | None = None  # set on streamed chunks of a batch

    def to_json(self) -> dict:
        body = self.model_dump(exclude_none=True)
        body["meta_info"]["finish_reason"] = (
            self.meta_info.finish_reason.model_dump(exclude_none=True)
            if self.meta_info.finish_reason
            else None
        )
        return body


class LoadLoRAAdapterReqInput(StrictModel):
    """POST /load_lora_adapter."""

    lora_name: str
    lora_path: str
    pinned: bool = False  # accepted: an adapter here stays loaded until it is unloaded


class UnloadLoRAAdapterReqInput(StrictModel):
    """POST /unload_lora_adapter."""

    lora_name: str


class LoRAUpdateOutput(BaseModel):
    """The reply to both: what is loaded after the update (name -> path)."""

    success: bool
    error_message: str | None = None
    loaded_adapters: dict[str, str] | None = None
