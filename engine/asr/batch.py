"""The runner's side of a decoding batch: per-row state and the tensors every row shares, and their surgery.

A batch's tensors only ever hold the rows still running (`active`): finished rows are dropped from them
(`drop_finished`), the self-attention cache grows a chunk at a time (`grow`), and batches started in
different steps are joined mid-decode (`merge_batches`), so every running row of a model advances in one
decoder call per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.asr.job import WhisperJob, WhisperRowOutput
from engine.models.whisper import WhisperModel

KV_CHUNK = 64  # self-attention cache grows by this many positions at a time


@dataclass
class DecodeRow:
    """One job's decoding state."""

    job: WhisperJob
    duration: float  # seconds of audio in the job
    language: str
    prompt: list[int]
    sot_index: int  # of <|startoftranscript|> in `prompt`: its logits give the no-speech probability
    max_new_tokens: int
    max_timestamp: int  # last allowed timestamp token index (the encoded span)
    tokens: list[int] = field(default_factory=list)  # generated, without EOT
    logprobs: list[float] = field(default_factory=list)  # of each of `tokens`, when it was chosen
    eot_logprob: float = 0.0  # of the EOT that ended the row (0 when something else ended it)
    no_speech_prob: float = 0.0  # P(<|nospeech|>) right after <|startoftranscript|>
    draft: list[int] = field(default_factory=list)  # to verify at prefill; ends with EOT
    draft_accepted: int = 0
    text: str = ""
    finished: bool = False
    generator: torch.Generator | None = None
    output: WhisperRowOutput | None = None  # set when finished


@dataclass
class WhisperBatch:
    jobs: list[WhisperJob]
    rows: list[DecodeRow]
    # Decoding state for the rows still running, in `active` order; empty once all are done.
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


def grow(batch: WhisperBatch) -> None:
    """Room for KV_CHUNK more positions in the self-attention cache."""
    assert batch.key_valid is not None
    extra = KV_CHUNK
    batch.self_k = [F.pad(k, (0, 0, 0, extra)) for k in batch.self_k]
    batch.self_v = [F.pad(v, (0, 0, 0, extra)) for v in batch.self_v]
    batch.key_valid = F.pad(batch.key_valid, (0, extra))


def drop_finished(batch: WhisperBatch) -> None:
    """Remove finished rows from the batch's tensors, so steps only pay for rows still running."""
    keep = [pos for pos, i in enumerate(batch.active) if not batch.rows[i].finished]
    if len(keep) == len(batch.active):
        return
    if not keep:
        release(batch)
        return
    assert batch.key_valid is not None and batch.positions is not None and batch.hidden is not None
    index = torch.tensor(keep, device=batch.key_valid.device)
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


def release(batch: WhisperBatch) -> None:
    """Free the batch's tensors (every row is done)."""
    batch.active = []
    batch.self_k, batch.self_v, batch.cross_k, batch.cross_v = [], [], [], []
    batch.key_valid = batch.positions = batch.hidden = batch.cross_valid = None


def merge_batches(model: WhisperModel, batches: list[WhisperBatch]) -> tuple[WhisperBatch, list[list[int]]]:
    """Join batches mid-decode into one, so every row advances in one decoder call per step.

    Only rows still decoding are kept; the second value lists, per input batch, the indices of its rows
    that the merged batch holds, in order. Self-attention caches are aligned on the column the next token
    goes to (left padding); encoder states are right-padded to the longest and masked.
    """
    live = [b for b in batches if b.active]
    kept = [list(b.active) if b.active else [] for b in batches]
    if len(live) <= 1:
        if live:
            only = live[0]
            only.rows = [only.rows[i] for i in only.active]
            only.jobs = [only.jobs[i] for i in only.active]
            only.active = list(range(len(only.rows)))
        return (live[0] if live else batches[0]), kept
    merged = _joined_tensors(model, live)
    rows = [b.rows[i] for b in live for i in b.active]
    merged.rows, merged.jobs = rows, [r.job for r in rows]
    # last_tokens only carry a sampled token to the forward pass within one step: nothing to keep.
    for b in live:
        release(b)
    return merged, kept


def _joined_tensors(model: WhisperModel, live: list[WhisperBatch]) -> WhisperBatch:
    length = max(b.length for b in live)
    capacity = length + KV_CHUNK
    enc_len = max(b.cross_k[0].shape[2] for b in live)
    count = sum(len(b.active) for b in live)
    device = model.device
    self_k, self_v = model.new_cache(count, capacity)
    key_valid = torch.zeros(count, capacity, dtype=torch.bool, device=device)
    cross_shape = (count, model.dec_heads, enc_len, model.head_dim)
    cross_k = [torch.zeros(cross_shape, device=device) for _ in range(model.num_layers)]
    cross_v = [torch.zeros(cross_shape, device=device) for _ in range(model.num_layers)]
    cross_valid = torch.zeros(count, enc_len, dtype=torch.bool, device=device)
    row = 0
    for b in live:
        assert b.key_valid is not None
        n, shift, t = len(b.active), length - b.length, b.cross_k[0].shape[2]
        for i in range(model.num_layers):
            self_k[i][row : row + n, :, shift:length] = b.self_k[i][:, :, : b.length]
            self_v[i][row : row + n, :, shift:length] = b.self_v[i][:, :, : b.length]
            cross_k[i][row : row + n, :, :t] = b.cross_k[i]
            cross_v[i][row : row + n, :, :t] = b.cross_v[i]
        key_valid[row : row + n, shift:length] = b.key_valid[:, : b.length]
        cross_valid[row : row + n, :t] = True if b.cross_valid is None else b.cross_valid
        row += n
    merged = WhisperBatch(jobs=[], rows=[], active=list(range(count)))
    merged.self_k, merged.self_v, merged.key_valid, merged.length = self_k, self_v, key_valid, length
    merged.cross_k, merged.cross_v = cross_k, cross_v
    merged.cross_valid = None if bool(cross_valid.all()) else cross_valid
    merged.positions = torch.cat([b.positions for b in live if b.positions is not None])
    merged.hidden = torch.cat([b.hidden for b in live if b.hidden is not None])
    return merged
