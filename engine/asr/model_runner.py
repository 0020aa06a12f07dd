"""Batched encode/decode of one Whisper model, on the inference thread.

    batch = runner.start(jobs)        # log-mel + encoder + decoder prompt (+ drafts), all jobs batched
    outs = runner.step(batch)         # one decoder step for every unfinished row; the outputs of all
    while not batch.done:             # (a row whose draft was accepted whole is done at start)
        outs = runner.step(batch)

Batches started in different steps (other requests, other sessions) are joined with
`runner.merge(batches)`, so every running row of a model advances in one decoder call per step.
Jobs are trusted: the lane validated their requests (engine/asr/validation.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from audio.constants import SAMPLE_RATE
from audio.features import HOP_LENGTH, log_mel_spectrogram, pad_batch
from engine.asr.batch import KV_CHUNK, DecodeRow, WhisperBatch, drop_finished, grow, merge_batches, release
from engine.asr.decoding import DecodingRules
from engine.asr.job import TIME_PRECISION, WhisperJob, WhisperRowOutput, encoder_positions
from engine.asr.language import normalize_language
from engine.asr.text import WhisperText
from engine.models.whisper import KVList, WhisperModel

if TYPE_CHECKING:
    from engine.models.whisper_loader import WhisperBundle

MAX_NEW_TOKENS = 224
MAX_PROMPT_TOKENS = 220  # previous-text tokens kept after <|startofprev|>


class WhisperRunner:
    def __init__(self, bundle: WhisperBundle, device: str) -> None:
        self.bundle = bundle
        self.device = torch.device(device)
        self.model = WhisperModel(bundle.model, self.device)
        self.text = WhisperText(bundle.tokenizer, bundle.eot_id, bundle.timestamp_begin)
        self.rules = DecodingRules(bundle, self.device, self.text)
        self.lang_ids = torch.tensor(sorted(bundle.id_to_lang), dtype=torch.long, device=self.device)

    # ---- start: encode, prompt, prefill ----

    @torch.inference_mode()
    def start(self, jobs: list[WhisperJob]) -> WhisperBatch:
        if not jobs:
            raise ValueError("start() needs at least one job")
        model = self.model
        max_samples = model.max_source_positions * model.frames_per_position * HOP_LENGTH
        audios = [np.asarray(job.audio, dtype=np.float32)[:max_samples] for job in jobs]
        positions = max(encoder_positions(job, model.max_source_positions) for job in jobs)
        mel = log_mel_spectrogram(
            pad_batch(audios, positions * model.frames_per_position * HOP_LENGTH), self.bundle.n_mels
        ).to(self.device)
        cross_k, cross_v = model.cross_kv(model.encode(mel))
        languages = self._languages(jobs, cross_k, cross_v)
        rows = [
            self._row(job, len(audio) / SAMPLE_RATE, language, positions)
            for job, audio, language in zip(jobs, audios, languages, strict=True)
        ]
        batch = WhisperBatch(jobs=list(jobs), rows=rows, active=list(range(len(jobs))))
        batch.cross_k, batch.cross_v = cross_k, cross_v
        self.prefill(batch)
        return batch

    def _row(self, job: WhisperJob, duration: float, language: str, positions: int) -> DecodeRow:
        prompt, sot_index = self._prompt(job, language)
        generator = None
        if job.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(job.seed if job.seed is not None else int(torch.seed() % 2**63))
        max_new_tokens = min(MAX_NEW_TOKENS, self.model.max_positions - len(prompt))
        return DecodeRow(
            job=job,
            duration=duration,
            language=language,
            prompt=prompt,
            sot_index=sot_index,
            max_new_tokens=max_new_tokens,
            max_timestamp=min(positions, round(30.0 / TIME_PRECISION)),
            draft=self._draft(job, max_new_tokens),
            generator=generator,
        )

    def _prompt(self, job: WhisperJob, language: str) -> tuple[list[int], int]:
        """The decoder prompt, and where <|startoftranscript|> is in it."""
        b = self.bundle
        tokens: list[int] = []
        if job.prompt and job.prompt.strip():
            previous = b.tokenizer.encode(" " + job.prompt.strip(), add_special_tokens=False)
            tokens = [b.startofprev_id, *previous[-MAX_PROMPT_TOKENS:]]
        sot_index = len(tokens)
        tokens.append(b.sot_id)
        if b.multilingual:
            tokens.append(b.lang_to_id[language])
            tokens.append(b.translate_id if job.task == "translate" else b.transcribe_id)
        if not job.with_timestamps:
            tokens.append(b.no_timestamps_id)
        return tokens, sot_index

    def _draft(self, job: WhisperJob, max_new_tokens: int) -> list[int]:
        if not job.draft_tokens or job.temperature > 0 or job.with_timestamps:
            return []
        return [*job.draft_tokens[: max_new_tokens - 1], self.bundle.eot_id]

    def _languages(self, jobs: list[WhisperJob], cross_k: KVList, cross_v: KVList) -> list[str]:
        b = self.bundle
        if not b.multilingual:
            return ["en"] * len(jobs)
        languages = [normalize_language(job.language) if job.language else "" for job in jobs]
        detect = [i for i, lang in enumerate(languages) if not lang]
        if detect:
            # Whisper's language detection: the language token most likely right after <|startoftranscript|>.
            index = torch.tensor(detect, device=self.device)
            keys, values = self.model.new_cache(len(detect), 1)
            tokens = torch.full((len(detect), 1), b.sot_id, dtype=torch.long, device=self.device)
            zeros = torch.zeros_like(tokens)
            mask = torch.ones(len(detect), 1, 1, 1, dtype=torch.bool, device=self.device)
            hidden = self.model.decode(
                tokens, zeros, mask, keys, values, 0,
                [k[index] for k in cross_k], [v[index] for v in cross_v],
            )  # fmt: skip
            best = self.model.logits(hidden[:, -1])[:, self.lang_ids].argmax(dim=-1)
            for row, choice in zip(detect, best.tolist(), strict=True):
                languages[row] = b.id_to_lang[int(self.lang_ids[choice])]
        return languages

    def prefill(self, batch: WhisperBatch) -> None:
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
        batch.self_k, batch.self_v = self.model.new_cache(count, capacity)
        batch.key_valid = torch.zeros(count, capacity, dtype=torch.bool, device=self.device)
        batch.key_valid[:, :longest] = valid.to(self.device)
        hidden = self.model.decode(
            tokens.to(self.device), positions.to(self.device), mask[:, None].to(self.device),
            batch.self_k, batch.self_v, 0, batch.cross_k, batch.cross_v,
        )  # fmt: skip
        batch.length = longest
        batch.positions = torch.tensor([len(seq) for seq in sequences], device=self.device)
        batch.hidden = hidden[:, -1]
        self._read_prefill(batch, hidden, pads)

    def _read_prefill(self, batch: WhisperBatch, hidden: torch.Tensor, pads: list[int]) -> None:
        """Every row's no-speech probability (from its <|startoftranscript|> state) and its draft's
        verification, from one pass over the vocabulary projection."""
        rows = batch.rows
        sot_columns = torch.tensor([pad + row.sot_index for pad, row in zip(pads, rows, strict=True)])
        sot_states = hidden[torch.arange(len(rows)), sot_columns.to(self.device)]
        drafts = self.rules.draft_states(rows, hidden)
        logits = self.model.logits(torch.cat([sot_states, *drafts]))
        no_speech = logits[: len(rows)].float().softmax(dim=-1)[:, self.bundle.no_speech_id]
        for row, prob in zip(rows, no_speech.tolist(), strict=True):
            row.no_speech_prob = prob
        if drafts:
            draft_logits = logits[len(rows) :].split([d.shape[0] for d in drafts])
            self.rules.verify_drafts(batch, hidden, list(draft_logits))

    # ---- step ----

    @torch.inference_mode()
    def step(self, batch: WhisperBatch) -> list[WhisperRowOutput]:
        """Sample every running row's next token and feed it; the outputs of all rows, in order."""
        drop_finished(batch)
        if batch.active:
            self._sample_and_advance(batch)
            drop_finished(batch)
            if batch.active:
                self._forward_step(batch)
        return [self.text.output(row) for row in batch.rows]

    def _sample_and_advance(self, batch: WhisperBatch) -> None:
        assert batch.hidden is not None
        rows = [batch.rows[i] for i in batch.active]
        logits = self.rules.constrain(self.model.logits(batch.hidden).float(), rows)
        chosen = self.rules.choose(logits, rows)
        logprobs = self.rules.logprobs_of(logits, torch.tensor(chosen, device=self.device))
        self.rules.accept_all(rows, chosen, logprobs)
        batch.last_tokens = chosen

    def _forward_step(self, batch: WhisperBatch) -> None:
        assert batch.key_valid is not None and batch.positions is not None
        count = len(batch.active)
        if batch.length >= batch.key_valid.shape[1]:
            grow(batch)
        col = batch.length
        tokens = torch.tensor(batch.last_tokens, dtype=torch.long, device=self.device).view(count, 1)
        batch.key_valid[:, col] = True
        mask = batch.key_valid[:, None, None, : col + 1]
        cross_mask = batch.cross_valid[:, None, None, :] if batch.cross_valid is not None else None
        hidden = self.model.decode(
            tokens, batch.positions.view(count, 1), mask, batch.self_k, batch.self_v, col,
            batch.cross_k, batch.cross_v, cross_mask,
        )  # fmt: skip
        batch.length = col + 1
        batch.positions = batch.positions + 1
        batch.hidden = hidden[:, -1]

    # ---- batch surgery ----

    def cancel(self, batch: WhisperBatch, index: int) -> None:
        """Finish row `index` now (its request went away); the rest of the batch goes on."""
        row = batch.rows[index]
        if not row.finished:
            row.finished = True
            self.text.finish(row)
        if batch.done:
            release(batch)

    @torch.inference_mode()
    def merge(self, batches: list[WhisperBatch]) -> tuple[WhisperBatch, list[list[int]]]:
        """Join batches mid-decode into one; see engine/asr/batch.py merge_batches."""
        return merge_batches(self.model, batches)
