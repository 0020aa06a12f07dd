"""Batched Whisper encode/decode.

The scheduler (engine/asr_scheduler.py, via engine/async_engine.py) calls, on the inference thread:
    batch = runner.start(jobs)        # log-mel + encoder + decoder prompt (+ drafts), all jobs batched
    outs = runner.step(batch)         # one decoder step for every unfinished row; the outputs of all
    while not batch.done:             # (a row whose draft was accepted whole is done at start)
        outs = runner.step(batch)
Batches started in different steps (other requests, other sessions) are joined with
`runner.merge(batches)`, so every running row of a model advances in one decoder call per step.

The encoder and decoder run on the weights of transformers' WhisperForConditionalGeneration but
through the few lines below rather than its forward(): HF's encoder insists on 3000 mel frames
(trimmed context needs fewer), and its generic cache has per-step overhead we do not need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from audio.features import HOP_LENGTH, SAMPLE_RATE, log_mel_spectrogram, pad_batch
from engine.models.whisper_loader import WhisperBundle
from engine.request import TRIM_MIN_S

MAX_NEW_TOKENS = 224
MAX_PROMPT_TOKENS = 220  # previous-text tokens kept after <|startofprev|>
MAX_INITIAL_TIMESTAMP_S = 1.0
TIME_PRECISION = 0.02  # seconds per timestamp token and per encoder position
TRIM_GRANULARITY_S = 1.0
# Trimmed context: encode the audio plus at least this much silence, and never less than
# TRIM_MIN_S in all (a job may ask for another minimum). Whisper only ever saw 30 s windows; with
# much less context, audio that holds several sentences and pauses gets repeated or hallucinated
# text after the speech ends (piper speech: WER 0.16-0.23 at 0-6 s minimum, 0.057 from 10 s on,
# 0.026 with the full 30 s). Single short utterances mostly do with less (16 of 0.5-7 s: WER 0.003
# from a 2 s minimum up), but not all: "the train to Boston" becomes "the train debossed" at 6 s.
TRIM_MARGIN_S = 1.0
KV_CHUNK = 64  # self-attention cache grows by this many positions at a time
NEG_INF = float("-inf")


@dataclass
class WhisperJob:
    """One window of <= 30 s audio to decode."""

    audio: np.ndarray  # float32 mono 16 kHz, at most 30 s
    language: str | None = None  # None: "en" on .en models, detected on multilingual ones
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None  # previous text, fed as <|startofprev|> context
    temperature: float = 0.0
    encoder_context: Literal["full", "trimmed"] = "full"
    min_context_s: float = TRIM_MIN_S  # with "trimmed": the least context encoded
    with_timestamps: bool = False
    seed: int | None = None
    # Text tokens the decode is expected to start with, e.g. the previous decode of the same growing
    # audio. Verified in the prefill pass: greedy decoding keeps the longest prefix it agrees with, so
    # the text is the same as without a draft and fewer decoder steps run. Ignored when sampling
    # (temperature > 0) or with timestamps.
    draft_tokens: list[int] | None = None


@dataclass
class WhisperSegment:
    start: float  # seconds within this window
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)


@dataclass
class WhisperRowOutput:
    """What one step produced for one job (one row of the batch)."""

    text: str  # the job's whole decoded text so far (the caller diffs successive values)
    finished: bool
    language: str = "en"
    num_tokens: int = 0  # generated tokens so far
    segments: list[WhisperSegment] = field(default_factory=list)  # set when finished
    draft_tokens: int = 0  # draft tokens verified (its closing EOT included)
    draft_accepted: int = 0  # of those, kept: decoder steps saved


@dataclass
class _Row:
    job: WhisperJob
    duration: float  # seconds of audio in the job
    language: str
    prompt: list[int]
    max_new_tokens: int
    max_timestamp: int  # last allowed timestamp token index (the encoded span)
    tokens: list[int] = field(default_factory=list)  # generated, without EOT
    draft: list[int] = field(default_factory=list)  # to verify at prefill; ends with EOT
    draft_accepted: int = 0
    text: str = ""
    finished: bool = False
    generator: torch.Generator | None = None
    output: WhisperRowOutput | None = None


@dataclass
class WhisperBatch:
    jobs: list[WhisperJob]
    rows: list[_Row]
    # Decoding state for the rows still running, in `active` order; None once all are done.
    active: list[int] = field(default_factory=list)
    self_k: list[torch.Tensor] = field(default_factory=list)  # per layer [B, H, capacity, hd]
    self_v: list[torch.Tensor] = field(default_factory=list)
    cross_k: list[torch.Tensor] = field(default_factory=list)  # per layer [B, H, T_enc, hd]
    cross_v: list[torch.Tensor] = field(default_factory=list)
    # [B, T_enc] False at padding, once batches with different encoder lengths were merged
    cross_valid: torch.Tensor | None = None
    key_valid: torch.Tensor | None = None  # [B, capacity] False at left padding
    positions: torch.Tensor | None = None  # [B] position id of each row's next token
    length: int = 0  # filled cache columns
    # [B, d] final decoder state of each row's last token, pending sampling. Logits are made from it
    # only when sampling, so rows merged from several batches share one pass over the vocabulary
    # projection (at small batches that pass is most of a step's cost: it reads the whole matrix).
    hidden: torch.Tensor | None = None
    last_tokens: list[int] = field(default_factory=list)  # tokens sampled by the last step, to feed next

    @property
    def done(self) -> bool:
        return all(row.finished for row in self.rows)


@dataclass
class _DecoderLayer:
    ln1: torch.nn.LayerNorm
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    out1: torch.nn.Linear
    ln2: torch.nn.LayerNorm
    cross_q: torch.nn.Linear
    cross_kv_w: torch.Tensor
    cross_kv_b: torch.Tensor
    out2: torch.nn.Linear
    ln3: torch.nn.LayerNorm
    fc1: torch.nn.Linear
    fc2: torch.nn.Linear


def _fused(*linears: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.cat([lin.weight for lin in linears])
    bias = torch.cat(
        [lin.bias if lin.bias is not None else torch.zeros_like(lin.weight[:, 0]) for lin in linears]
    )
    return weight, bias


def normalize_language(code: str) -> str:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    lowered = code.strip().lower()
    if lowered in LANGUAGES:
        return lowered
    if lowered in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[lowered]
    raise ValueError(f"unknown language {code!r}; use an ISO 639-1 code such as 'en' or 'fr'")


def repetition_cut(tokens: list[int], max_period: int = 32) -> int | None:
    """If `tokens` ends in a loop (a block repeated many times), the length that keeps one copy of it."""
    n = len(tokens)
    for period in range(1, min(max_period, n // 2) + 1):
        # "no no no" is speech, sixteen of them a loop; a whole sentence said twice is a loop too.
        repeats = 2 if period >= 8 else max(3, math.ceil(16 / period))
        span = period * repeats
        if span > n or tokens[-1] != tokens[-1 - period]:
            continue
        tail = tokens[n - span :]
        if tail[period:] == tail[:-period]:
            return n - span + period
    return None


class WhisperRunner:
    def __init__(self, bundle: WhisperBundle, device: str) -> None:
        self.bundle = bundle
        self.device = torch.device(device)
        model = bundle.model.to(self.device).eval()
        self.encoder = model.model.encoder
        self.decoder = model.model.decoder
        head = model.proj_out
        # fp32 on a CPU: a transposed copy, since MKL reads [d, V] about twice as fast as W.T at small
        # batches; otherwise (a GPU, or the int8 head of --asr-quantize) the module is called as it is.
        fp32_cpu = isinstance(head, torch.nn.Linear) and self.device.type == "cpu"
        self._head_t = head.weight.detach().T.contiguous() if fp32_cpu else None
        self._head = head
        cfg = model.config
        self.d_model = cfg.d_model
        self.enc_heads = cfg.encoder_attention_heads
        self.dec_heads = cfg.decoder_attention_heads
        self.max_positions = cfg.max_target_positions
        self.max_source_positions = cfg.max_source_positions
        # conv1 stride 1, conv2 stride 2: two mel frames per encoder position.
        self.frames_per_position = self.encoder.conv1.stride[0] * self.encoder.conv2.stride[0]
        self.enc_qkv = [
            _fused(lay.self_attn.q_proj, lay.self_attn.k_proj, lay.self_attn.v_proj)
            for lay in self.encoder.layers
        ]
        self.dec_layers: list[_DecoderLayer] = []
        for lay in self.decoder.layers:
            qkv_w, qkv_b = _fused(lay.self_attn.q_proj, lay.self_attn.k_proj, lay.self_attn.v_proj)
            kv_w, kv_b = _fused(lay.encoder_attn.k_proj, lay.encoder_attn.v_proj)
            self.dec_layers.append(
                _DecoderLayer(
                    lay.self_attn_layer_norm,
                    qkv_w,
                    qkv_b,
                    lay.self_attn.out_proj,
                    lay.encoder_attn_layer_norm,
                    lay.encoder_attn.q_proj,
                    kv_w,
                    kv_b,
                    lay.encoder_attn.out_proj,
                    lay.final_layer_norm,
                    lay.fc1,
                    lay.fc2,
                )  # fmt: skip
            )
        self._build_suppression()

    def _build_suppression(self) -> None:
        b = self.bundle
        vocab = b.vocab_size
        base = torch.zeros(vocab)
        base[[t for t in b.suppress_tokens if 0 <= t < vocab]] = NEG_INF
        base[b.eot_id + 1 : b.timestamp_begin] = NEG_INF  # sot, languages, tasks, <|notimestamps|>...
        text_only = base.clone()
        text_only[b.timestamp_begin :] = NEG_INF
        # Row 0: plain text decoding; row 1: decoding with timestamps.
        self.suppress_bias = torch.stack([text_only, base]).to(self.device)
        self.begin_suppress = torch.tensor(b.begin_suppress_tokens, dtype=torch.long, device=self.device)
        self.lang_ids = torch.tensor(sorted(b.id_to_lang), dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ jobs

    def validate_job(self, job: WhisperJob) -> None:
        """Raise ValueError with a user-facing message if the job cannot run on this model."""
        b = self.bundle
        if job.task not in ("transcribe", "translate"):
            raise ValueError(f"unknown task {job.task!r}; use 'transcribe' or 'translate'")
        if not b.multilingual:
            if job.task == "translate":
                raise ValueError(f"{b.name} is English-only and cannot translate; use a multilingual model")
            if job.language is not None and normalize_language(job.language) != "en":
                raise ValueError(f"{b.name} is English-only; language {job.language!r} is not supported")
        elif job.language is not None:
            code = normalize_language(job.language)
            if code not in b.lang_to_id:
                raise ValueError(f"{b.name} does not know language {job.language!r}")
        if job.temperature < 0 or not math.isfinite(job.temperature):
            raise ValueError("temperature must be a finite number >= 0")
        if job.encoder_context not in ("full", "trimmed"):
            raise ValueError(f"unknown encoder_context {job.encoder_context!r}")
        if not 0 < job.min_context_s <= 30:
            raise ValueError("min_context_s must be in (0, 30] seconds")
        if job.draft_tokens and not all(0 <= t < b.eot_id for t in job.draft_tokens):
            raise ValueError("draft_tokens must be text token ids")

    def encoder_positions(self, job: WhisperJob) -> int:
        """Encoder positions the job needs: all 1500, or its audio (rounded up) plus a margin."""
        if job.encoder_context == "full":
            return self.max_source_positions
        seconds = len(job.audio) / SAMPLE_RATE + TRIM_MARGIN_S
        seconds = max(job.min_context_s, math.ceil(seconds / TRIM_GRANULARITY_S) * TRIM_GRANULARITY_S)
        positions = int(round(seconds / TIME_PRECISION))
        return max(1, min(self.max_source_positions, positions))

    def _prompt(self, job: WhisperJob, language: str) -> list[int]:
        b = self.bundle
        tokens: list[int] = []
        if job.prompt and job.prompt.strip():
            previous = b.tokenizer.encode(" " + job.prompt.strip(), add_special_tokens=False)
            tokens = [b.startofprev_id, *previous[-MAX_PROMPT_TOKENS:]]
        tokens.append(b.sot_id)
        if b.multilingual:
            tokens.append(b.lang_to_id[language])
            tokens.append(b.translate_id if job.task == "translate" else b.transcribe_id)
        if not job.with_timestamps:
            tokens.append(b.no_timestamps_id)
        return tokens

    # ------------------------------------------------------------------ model pieces

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, 2T] log-mel -> [B, T, d] encoder states, for any T <= 1500."""
        enc = self.encoder
        x = F.gelu(enc.conv1(mel))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        batch, positions, _ = x.shape
        x = x + enc.embed_positions.weight[:positions]
        heads, head_dim = self.enc_heads, self.d_model // self.enc_heads
        for layer, (qkv_w, qkv_b) in zip(enc.layers, self.enc_qkv, strict=True):
            h = layer.self_attn_layer_norm(x)
            q, k, v = (
                F.linear(h, qkv_w, qkv_b).view(batch, positions, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            )
            a = F.scaled_dot_product_attention(q, k, v)
            x = x + layer.self_attn.out_proj(a.transpose(1, 2).reshape(batch, positions, self.d_model))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return enc.layer_norm(x)

    def _cross_kv(self, states: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        batch, positions, _ = states.shape
        heads, head_dim = self.dec_heads, self.d_model // self.dec_heads
        keys, values = [], []
        for layer in self.dec_layers:
            kv = F.linear(states, layer.cross_kv_w, layer.cross_kv_b)
            k, v = kv.view(batch, positions, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
            keys.append(k.contiguous())
            values.append(v.contiguous())
        return keys, values

    def _decode(
        self,
        tokens: torch.Tensor,  # [B, S]
        positions: torch.Tensor,  # [B, S]
        mask: torch.Tensor,  # [B, 1, S, length + S] bool, True = may attend
        self_k: list[torch.Tensor],
        self_v: list[torch.Tensor],
        start: int,  # cache column of tokens[:, 0]
        cross_k: list[torch.Tensor],
        cross_v: list[torch.Tensor],
        cross_mask: torch.Tensor | None = None,  # [B, 1, 1, T_enc] bool
    ) -> torch.Tensor:
        """Run the decoder on S new tokens per row, writing their keys/values into the caches.

        Returns the final hidden state of every new token: [B, S, d].
        """
        batch, steps = tokens.shape
        heads, head_dim = self.dec_heads, self.d_model // self.dec_heads
        end = start + steps
        x = self.decoder.embed_tokens(tokens) + self.decoder.embed_positions.weight[positions]
        for i, layer in enumerate(self.dec_layers):
            h = layer.ln1(x)
            q, k, v = (
                F.linear(h, layer.qkv_w, layer.qkv_b)
                .view(batch, steps, 3, heads, head_dim)
                .permute(2, 0, 3, 1, 4)
            )
            self_k[i][:, :, start:end] = k
            self_v[i][:, :, start:end] = v
            a = F.scaled_dot_product_attention(
                q, self_k[i][:, :, :end], self_v[i][:, :, :end], attn_mask=mask
            )
            x = x + layer.out1(a.transpose(1, 2).reshape(batch, steps, self.d_model))
            h = layer.ln2(x)
            q = layer.cross_q(h).view(batch, steps, heads, head_dim).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, cross_k[i], cross_v[i], attn_mask=cross_mask)
            x = x + layer.out2(a.transpose(1, 2).reshape(batch, steps, self.d_model))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.ln3(x))))
        return self.decoder.layer_norm(x)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._head_t is not None:
            return hidden @ self._head_t
        return self._head(hidden)

    def _new_cache(self, batch: int, capacity: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        shape = (batch, self.dec_heads, capacity, self.d_model // self.dec_heads)
        layers = len(self.dec_layers)
        keys = [torch.zeros(shape, device=self.device) for _ in range(layers)]
        values = [torch.zeros(shape, device=self.device) for _ in range(layers)]
        return keys, values

    # ------------------------------------------------------------------ start

    @torch.inference_mode()
    def start(self, jobs: list[WhisperJob]) -> WhisperBatch:
        if not jobs:
            raise ValueError("start() needs at least one job")
        for job in jobs:
            self.validate_job(job)
        b = self.bundle
        max_samples = self.max_source_positions * self.frames_per_position * HOP_LENGTH
        audios = [np.asarray(job.audio, dtype=np.float32)[:max_samples] for job in jobs]
        positions = max(self.encoder_positions(job) for job in jobs)
        mel = log_mel_spectrogram(
            pad_batch(audios, positions * self.frames_per_position * HOP_LENGTH), b.n_mels
        ).to(self.device)
        cross_k, cross_v = self._cross_kv(self.encode(mel))

        languages = self._languages(jobs, cross_k, cross_v)
        rows: list[_Row] = []
        for job, audio, language in zip(jobs, audios, languages, strict=True):
            prompt = self._prompt(job, language)
            generator = None
            if job.temperature > 0:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(job.seed if job.seed is not None else int(torch.seed() % 2**63))
            max_new_tokens = min(MAX_NEW_TOKENS, self.max_positions - len(prompt))
            rows.append(
                _Row(
                    job=job,
                    duration=len(audio) / SAMPLE_RATE,
                    language=language,
                    prompt=prompt,
                    max_new_tokens=max_new_tokens,
                    max_timestamp=min(positions, round(30.0 / TIME_PRECISION)),
                    draft=self._draft(job, max_new_tokens),
                    generator=generator,
                )
            )
        batch = WhisperBatch(jobs=list(jobs), rows=rows, active=list(range(len(jobs))))
        batch.cross_k, batch.cross_v = cross_k, cross_v
        self._prefill(batch)
        return batch

    def _draft(self, job: WhisperJob, max_new_tokens: int) -> list[int]:
        if not job.draft_tokens or job.temperature > 0 or job.with_timestamps:
            return []
        return [*job.draft_tokens[: max_new_tokens - 1], self.bundle.eot_id]

    def _languages(
        self, jobs: list[WhisperJob], cross_k: list[torch.Tensor], cross_v: list[torch.Tensor]
    ) -> list[str]:
        b = self.bundle
        if not b.multilingual:
            return ["en"] * len(jobs)
        languages = [normalize_language(job.language) if job.language else "" for job in jobs]
        detect = [i for i, lang in enumerate(languages) if not lang]
        if detect:
            # Whisper's language detection: the language token most likely right after <|startoftranscript|>.
            index = torch.tensor(detect, device=self.device)
            keys, values = self._new_cache(len(detect), 1)
            tokens = torch.full((len(detect), 1), b.sot_id, dtype=torch.long, device=self.device)
            zeros = torch.zeros_like(tokens)
            mask = torch.ones(len(detect), 1, 1, 1, dtype=torch.bool, device=self.device)
            hidden = self._decode(
                tokens, zeros, mask, keys, values, 0,
                [k[index] for k in cross_k], [v[index] for v in cross_v],
            )  # fmt: skip
            best = self._logits(hidden[:, -1])[:, self.lang_ids].argmax(dim=-1)
            for row, choice in zip(detect, best.tolist(), strict=True):
                languages[row] = b.id_to_lang[int(self.lang_ids[choice])]
        return languages

    def _prefill(self, batch: WhisperBatch) -> None:
        """Run every row's prompt, and its draft after it, through the decoder in one pass."""
        rows = batch.rows
        sequences = [row.prompt + row.draft for row in rows]
        longest = max(len(seq) for seq in sequences)
        count = len(rows)
        tokens = torch.full((count, longest), self.bundle.eot_id, dtype=torch.long)
        valid = torch.zeros(count, longest, dtype=torch.bool)
        pads = []
        for i, seq in enumerate(sequences):
            pad = longest - len(seq)  # left padding: every row's next token lands in the same column
            tokens[i, pad:] = torch.tensor(seq)
            valid[i, pad:] = True
            pads.append(pad)
        pad_t = torch.tensor(pads)
        positions = (torch.arange(longest).unsqueeze(0) - pad_t.unsqueeze(1)).clamp(min=0)
        causal = torch.ones(longest, longest, dtype=torch.bool).tril()
        # Padding queries attend to themselves only, so no row of the softmax is empty (NaN).
        mask = (causal & valid[:, None, :]) | torch.eye(longest, dtype=torch.bool)
        capacity = longest + KV_CHUNK
        batch.self_k, batch.self_v = self._new_cache(count, capacity)
        batch.key_valid = torch.zeros(count, capacity, dtype=torch.bool, device=self.device)
        batch.key_valid[:, :longest] = valid.to(self.device)
        hidden = self._decode(
            tokens.to(self.device), positions.to(self.device), mask[:, None].to(self.device),
            batch.self_k, batch.self_v, 0, batch.cross_k, batch.cross_v,
        )  # fmt: skip
        batch.length = longest
        batch.positions = torch.tensor([len(seq) for seq in sequences], device=self.device)
        batch.hidden = hidden[:, -1]
        if any(row.draft for row in rows):
            self._verify_drafts(batch, hidden)

    def _verify_drafts(self, batch: WhisperBatch, hidden: torch.Tensor) -> None:
        """Keep each draft's longest prefix that greedy decoding agrees with; forget the rest.

        Rejected draft tokens stay in their cache columns but are masked out, and the row's next
        position follows its last kept token, so the next step goes on as if only they had been fed.
        """
        drafted = [i for i, row in enumerate(batch.rows) if row.draft]
        # The state before draft token j predicts it: the prompt's last token, then the draft's own.
        spans = [hidden[i, -len(batch.rows[i].draft) - 1 : -1] for i in drafted]
        logits = self._logits(torch.cat(spans)).float() + self.suppress_bias[0]
        choices = logits.split([span.shape[0] for span in spans])
        assert batch.key_valid is not None and batch.positions is not None and batch.hidden is not None
        batch.hidden = batch.hidden.clone()  # a view into `hidden` until now
        for i, row_logits in zip(drafted, choices, strict=True):
            row = batch.rows[i]
            row_logits[0, self.begin_suppress] = NEG_INF
            greedy = row_logits.argmax(dim=-1).tolist()
            for proposed, chosen in zip(row.draft, greedy, strict=True):
                if proposed != chosen or row.finished:
                    break
                self._accept(row, proposed)
                row.draft_accepted += 1
            kept, rejected = row.draft_accepted, len(row.draft) - row.draft_accepted
            if rejected:
                batch.key_valid[i, batch.length - rejected : batch.length] = False
                batch.positions[i] -= rejected
                batch.hidden[i] = hidden[i, -rejected - 1]
            if row.finished:
                row.output = self._finish_output(row)
            elif kept:
                self._update_text(row)

    # ------------------------------------------------------------------ step

    def cancel(self, batch: WhisperBatch, index: int) -> None:
        row = batch.rows[index]
        if not row.finished:
            row.finished = True
            row.output = self._finish_output(row)
        if batch.done:
            self._release(batch)

    @torch.inference_mode()
    def step(self, batch: WhisperBatch) -> list[WhisperRowOutput]:
        self._drop_finished(batch)
        if batch.active:
            self._sample_and_advance(batch)
            self._drop_finished(batch)
            if batch.active:
                self._forward_step(batch)
        return [self._output(row) for row in batch.rows]

    def _sample_and_advance(self, batch: WhisperBatch) -> None:
        rows = [batch.rows[i] for i in batch.active]
        logits = self._logits(batch.hidden).float()
        ts_mode = torch.tensor([int(row.job.with_timestamps) for row in rows], device=self.device)
        logits = logits + self.suppress_bias[ts_mode]
        first = [i for i, row in enumerate(rows) if not row.tokens]
        if first:
            logits[torch.tensor(first, device=self.device)[:, None], self.begin_suppress[None, :]] = NEG_INF
        ts_rows = [i for i, row in enumerate(rows) if row.job.with_timestamps]
        if ts_rows:
            self._apply_timestamp_rules(logits, rows, ts_rows)
        chosen = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.job.temperature > 0:
                probs = torch.softmax(logits[i] / row.job.temperature, dim=-1)
                chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator))
        for row, token in zip(rows, chosen, strict=True):
            self._accept(row, token)
            if row.finished:
                row.output = self._finish_output(row)
            else:
                self._update_text(row)
        batch.last_tokens = chosen

    def _accept(self, row: _Row, token: int) -> None:
        """Append a decoded token; EOT, a repetition loop or the token limit finish the row."""
        if token == self.bundle.eot_id:
            row.finished = True
            return
        row.tokens.append(token)
        cut = repetition_cut(self._text_tokens(row.tokens))
        if cut is not None:
            self._truncate_text_tokens(row, cut)
            row.finished = True
        elif len(row.tokens) >= row.max_new_tokens:
            row.finished = True

    def _apply_timestamp_rules(self, logits: torch.Tensor, rows: list[_Row], ts_rows: list[int]) -> None:
        """Whisper's ApplyTimestampRules: timestamps come in increasing pairs and win when likelier than text."""
        b = self.bundle
        begin, eot = b.timestamp_begin, b.eot_id
        for i in ts_rows:
            row = rows[i]
            seq = row.tokens
            row_logits = logits[i]
            row_logits[begin + row.max_timestamp + 1 :] = NEG_INF
            if not seq:
                row_logits[:begin] = NEG_INF  # the first token is a timestamp
                row_logits[begin + round(MAX_INITIAL_TIMESTAMP_S / TIME_PRECISION) + 1 :] = NEG_INF
                continue
            last_ts = seq[-1] >= begin
            penultimate_ts = len(seq) < 2 or seq[-2] >= begin
            if last_ts:
                if penultimate_ts:
                    row_logits[begin:] = NEG_INF  # a pair just closed: text (or EOT) next
                else:
                    row_logits[:eot] = NEG_INF  # an open timestamp: no text until it is closed
            stamps = [t for t in seq if t >= begin]
            if stamps:
                # Timestamps never decrease; an open pair may close on the same value.
                floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
                row_logits[begin:floor] = NEG_INF
        index = torch.tensor(ts_rows, device=self.device)
        logprobs = torch.log_softmax(logits[index], dim=-1)
        ts_mass = logprobs[:, begin:].logsumexp(dim=-1)
        best_text = logprobs[:, :begin].max(dim=-1).values
        for j, force in zip(ts_rows, (ts_mass > best_text).tolist(), strict=True):
            if force:
                logits[j, :begin] = NEG_INF

    def _forward_step(self, batch: WhisperBatch) -> None:
        count = len(batch.active)
        if batch.length >= batch.key_valid.shape[1]:
            self._grow(batch)
        col = batch.length
        tokens = torch.tensor(batch.last_tokens, dtype=torch.long, device=self.device).view(count, 1)
        batch.key_valid[:, col] = True
        mask = batch.key_valid[:, None, None, : col + 1]
        cross_mask = batch.cross_valid[:, None, None, :] if batch.cross_valid is not None else None
        hidden = self._decode(
            tokens, batch.positions.view(count, 1), mask, batch.self_k, batch.self_v, col,
            batch.cross_k, batch.cross_v, cross_mask,
        )  # fmt: skip
        batch.length = col + 1
        batch.positions = batch.positions + 1
        batch.hidden = hidden[:, -1]

    @torch.inference_mode()
    def merge(self, batches: list[WhisperBatch]) -> tuple[WhisperBatch, list[list[int]]]:
        """Join batches mid-decode into one, so every row advances in one decoder call per step.

        Only rows still decoding are kept; the second value lists, per input batch, the indices
        of its rows that the merged batch holds, in order. Self-attention caches are aligned on
        the column the next token goes to (left padding); encoder states are right-padded to the
        longest and masked.
        """
        live = [b for b in batches if b.active]
        kept = [list(b.active) if b.active else [] for b in batches]
        if len(live) <= 1:
            if live:
                only = live[0]
                only.rows, only.jobs = (
                    [only.rows[i] for i in only.active],
                    [only.jobs[i] for i in only.active],
                )
                only.active = list(range(len(only.rows)))
            return (live[0] if live else batches[0]), kept
        length = max(b.length for b in live)
        capacity = length + KV_CHUNK
        enc_len = max(b.cross_k[0].shape[2] for b in live)
        count = sum(len(b.active) for b in live)
        layers = len(self.dec_layers)
        self_k, self_v = self._new_cache(count, capacity)
        key_valid = torch.zeros(count, capacity, dtype=torch.bool, device=self.device)
        cross_shape = (count, self.dec_heads, enc_len, self.d_model // self.dec_heads)
        cross_k = [torch.zeros(cross_shape, device=self.device) for _ in range(layers)]
        cross_v = [torch.zeros(cross_shape, device=self.device) for _ in range(layers)]
        cross_valid = torch.zeros(count, enc_len, dtype=torch.bool, device=self.device)
        row = 0
        for b in live:
            n, shift, t = len(b.active), length - b.length, b.cross_k[0].shape[2]
            for i in range(layers):
                self_k[i][row : row + n, :, shift:length] = b.self_k[i][:, :, : b.length]
                self_v[i][row : row + n, :, shift:length] = b.self_v[i][:, :, : b.length]
                cross_k[i][row : row + n, :, :t] = b.cross_k[i]
                cross_v[i][row : row + n, :, :t] = b.cross_v[i]
            key_valid[row : row + n, shift:length] = b.key_valid[:, : b.length]
            cross_valid[row : row + n, :t] = True if b.cross_valid is None else b.cross_valid
            row += n
        rows = [b.rows[i] for b in live for i in b.active]
        merged = WhisperBatch(jobs=[r.job for r in rows], rows=rows, active=list(range(count)))
        merged.self_k, merged.self_v, merged.key_valid, merged.length = self_k, self_v, key_valid, length
        merged.cross_k, merged.cross_v = cross_k, cross_v
        merged.cross_valid = None if bool(cross_valid.all()) else cross_valid
        merged.positions = torch.cat([b.positions for b in live])
        merged.hidden = torch.cat([b.hidden for b in live])
        # last_tokens only carry a sampled token to the forward pass within one step: nothing to keep.
        for b in live:
            self._release(b)
        return merged, kept

    def _grow(self, batch: WhisperBatch) -> None:
        extra = KV_CHUNK
        batch.self_k = [F.pad(k, (0, 0, 0, extra)) for k in batch.self_k]
        batch.self_v = [F.pad(v, (0, 0, 0, extra)) for v in batch.self_v]
        batch.key_valid = F.pad(batch.key_valid, (0, extra))

    def _drop_finished(self, batch: WhisperBatch) -> None:
        """Remove finished rows from the batch's tensors, so steps only pay for rows still running."""
        keep = [pos for pos, i in enumerate(batch.active) if not batch.rows[i].finished]
        if len(keep) == len(batch.active):
            return
        if not keep:
            self._release(batch)
            return
        index = torch.tensor(keep, device=self.device)
        batch.active = [batch.active[pos] for pos in keep]
        batch.self_k = [k[index] for k in batch.self_k]
        batch.self_v = [v[index] for v in batch.self_v]
        batch.cross_k = [k[index] for k in batch.cross_k]
        batch.cross_v = [v[index] for v in batch.cross_v]
        batch.key_valid = batch.key_valid[index]
        if batch.cross_valid is not None:
            batch.cross_valid = batch.cross_valid[index]
        batch.positions = batch.positions[index]
        batch.hidden = batch.hidden[index]
        if batch.last_tokens:
            batch.last_tokens = [batch.last_tokens[pos] for pos in keep]

    def _release(self, batch: WhisperBatch) -> None:
        batch.active = []
        batch.self_k, batch.self_v, batch.cross_k, batch.cross_v = [], [], [], []
        batch.key_valid = batch.positions = batch.hidden = batch.cross_valid = None

    # ------------------------------------------------------------------ text

    def _text_tokens(self, tokens: list[int]) -> list[int]:
        eot = self.bundle.eot_id
        return [t for t in tokens if t < eot]

    def _truncate_text_tokens(self, row: _Row, keep_text: int) -> None:
        eot = self.bundle.eot_id
        seen = 0
        for pos, token in enumerate(row.tokens):
            if token < eot:
                if seen == keep_text:
                    del row.tokens[pos:]
                    return
                seen += 1

    def _update_text(self, row: _Row) -> None:
        # Whisper's leading space is kept: the caller joins windows' texts with "".
        text = self.bundle.tokenizer.decode(self._text_tokens(row.tokens))
        # A multi-byte character split across tokens decodes to U+FFFD until its last byte arrives.
        if not text.endswith("\ufffd") or row.finished:
            row.text = text.replace("\ufffd", "") if row.finished else text

    def _segments(self, row: _Row) -> list[WhisperSegment]:
        b = self.bundle
        if not row.job.with_timestamps:
            return [WhisperSegment(0.0, row.duration, row.text.strip(), self._text_tokens(row.tokens))]
        segments: list[WhisperSegment] = []
        start: float | None = None
        last_end = 0.0
        text_tokens: list[int] = []

        def close(end: float) -> None:
            text = b.tokenizer.decode(text_tokens).strip()
            if text:
                segments.append(
                    WhisperSegment(start if start is not None else last_end, end, text, list(text_tokens))
                )
            text_tokens.clear()

        for token in row.tokens:
            if token < b.eot_id:
                text_tokens.append(token)
                continue
            # The model may stamp the end of speech a little past the end of the audio.
            time = min((token - b.timestamp_begin) * TIME_PRECISION, row.duration)
            if start is not None and text_tokens:
                close(time)
                last_end, start = time, None
            else:
                start = time
        if text_tokens:
            close(row.duration)
        return segments

    def _finish_output(self, row: _Row) -> WhisperRowOutput:
        self._update_text(row)
        return WhisperRowOutput(
            text=row.text,
            finished=True,
            language=row.language,
            num_tokens=len(row.tokens),
            segments=self._segments(row),
            draft_tokens=len(row.draft),
            draft_accepted=row.draft_accepted,
        )

    def _output(self, row: _Row) -> WhisperRowOutput:
        if row.finished and row.output is not None:
            return row.output
        return WhisperRowOutput(
            text=row.text, finished=row.finished, language=row.language, num_tokens=len(row.tokens)
        )
