"""Whisper's decoding rules: which tokens may come next, how one is chosen, when a row is finished,
and how a draft (a previous hypothesis) is verified against greedy decoding in one pass."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from engine.asr.batch import DecodeRow, WhisperBatch
from engine.asr.job import TIME_PRECISION
from engine.asr.text import WhisperText

if TYPE_CHECKING:
    from engine.models.whisper_loader import WhisperBundle

MAX_INITIAL_TIMESTAMP_S = 1.0
NEG_INF = float("-inf")


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


class DecodingRules:
    def __init__(self, bundle: WhisperBundle, device: torch.device, text: WhisperText) -> None:
        self.device = device
        self.text = text
        self.eot_id = bundle.eot_id
        self.timestamp_begin = bundle.timestamp_begin
        vocab = bundle.vocab_size
        base = torch.zeros(vocab)
        base[[t for t in bundle.suppress_tokens if 0 <= t < vocab]] = NEG_INF
        # <|startoftranscript|>, languages, tasks, <|notimestamps|>...: never generated.
        base[bundle.eot_id + 1 : bundle.timestamp_begin] = NEG_INF
        text_only = base.clone()
        text_only[bundle.timestamp_begin :] = NEG_INF
        # Row 0: plain text decoding; row 1: decoding with timestamps.
        self.suppress_bias = torch.stack([text_only, base]).to(device)
        self.begin_suppress = torch.tensor(bundle.begin_suppress_tokens, dtype=torch.long, device=device)

    # ---- choosing the next token ----

    def constrain(self, logits: torch.Tensor, rows: list[DecodeRow]) -> torch.Tensor:
        """[B, V] float logits of `rows`' next tokens, with every forbidden token at -inf."""
        ts_mode = torch.tensor([int(row.job.with_timestamps) for row in rows], device=self.device)
        logits = logits + self.suppress_bias[ts_mode]
        first = [i for i, row in enumerate(rows) if not row.tokens]
        if first:
            logits[torch.tensor(first, device=self.device)[:, None], self.begin_suppress[None, :]] = NEG_INF
        ts_rows = [i for i, row in enumerate(rows) if row.job.with_timestamps]
        if ts_rows:
            self._apply_timestamp_rules(logits, rows, ts_rows)
        return logits

    def _apply_timestamp_rules(self, logits: torch.Tensor, rows: list[DecodeRow], ts_rows: list[int]) -> None:
        """Whisper's ApplyTimestampRules: timestamps come in increasing pairs and win when likelier than text."""
        begin, eot = self.timestamp_begin, self.eot_id
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

    @staticmethod
    def choose(logits: torch.Tensor, rows: list[DecodeRow]) -> list[int]:
        """Greedy, or sampled at the row's temperature with its own generator."""
        chosen = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.job.temperature > 0:
                probs = torch.softmax(logits[i] / row.job.temperature, dim=-1)
                chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator))
        return chosen

    @staticmethod
    def logprobs_of(logits: torch.Tensor, chosen: torch.Tensor) -> list[float]:
        """[N] log-probabilities of `chosen` under the (constrained, unscaled) [N, V] `logits`."""
        picked = logits.gather(1, chosen.view(-1, 1)).squeeze(1)
        return (picked - logits.logsumexp(dim=-1)).tolist()

    # ---- a row's tokens ----

    def accept(self, row: DecodeRow, token: int, logprob: float) -> None:
        """Append a decoded token; EOT, a repetition loop or the token limit finish the row."""
        if token == self.eot_id:
            row.eot_logprob = logprob
            row.finished = True
            return
        row.tokens.append(token)
        row.logprobs.append(logprob)
        cut = repetition_cut(self.text.text_tokens(row.tokens))
        if cut is not None:
            self.text.truncate_text_tokens(row, cut)
            row.finished = True
        elif len(row.tokens) >= row.max_new_tokens:
            row.finished = True

    def accept_all(self, rows: list[DecodeRow], tokens: list[int], logprobs: list[float]) -> None:
        """One token for each row, and its text brought up to date."""
        for row, token, logprob in zip(rows, tokens, logprobs, strict=True):
            self.accept(row, token, logprob)
            if row.finished:
                self.text.finish(row)
            else:
                self.text.update_text(row)

    # ---- drafts ----

    @staticmethod
    def draft_states(rows: list[DecodeRow], hidden: torch.Tensor) -> list[torch.Tensor]:
        """Per drafted row, in order: the prefill states that predict its draft tokens (the prompt's last
        token's, then the draft's own but its last). `hidden` is the prefill's [B, S, d] output."""
        return [hidden[i, -len(row.draft) - 1 : -1] for i, row in enumerate(rows) if row.draft]

    def verify_drafts(
        self, batch: WhisperBatch, hidden: torch.Tensor, draft_logits: list[torch.Tensor]
    ) -> None:
        """Keep each draft's longest prefix that greedy decoding agrees with; forget the rest.

        `hidden` is the prefill's [B, S, d] output and `draft_logits` the vocabulary logits of
        `draft_states`. Rejected draft tokens stay in their cache columns but are masked out, and the
        row's next position follows its last kept token, so the next step goes on as if only they had
        been fed.
        """
        drafted = [i for i, row in enumerate(batch.rows) if row.draft]
        assert batch.key_valid is not None and batch.positions is not None and batch.hidden is not None
        batch.hidden = batch.hidden.clone()  # a view into `hidden` until now
        for i, raw in zip(drafted, draft_logits, strict=True):
            row = batch.rows[i]
            row_logits = raw.float() + self.suppress_bias[0]
            row_logits[0, self.begin_suppress] = NEG_INF
            greedy = row_logits.argmax(dim=-1)
            logprobs = self.logprobs_of(row_logits, torch.tensor(row.draft, device=self.device))
            for proposed, chosen, logprob in zip(row.draft, greedy.tolist(), logprobs, strict=True):
                if proposed != chosen or row.finished:
                    break
                self.accept(row, proposed, logprob)
                row.draft_accepted += 1
            kept, rejected = row.draft_accepted, len(row.draft) - row.draft_accepted
            if rejected:
                batch.key_valid[i, batch.length - rejected : batch.length] = False
                batch.positions[i] -= rejected
                batch.hidden[i] = hidden[i, -rejected - 1]
            if row.finished:
                self.text.finish(row)
            elif kept:
                self.text.update_text(row)
