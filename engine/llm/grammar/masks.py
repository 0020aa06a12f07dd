"""Each step's token masks for the constrained rows of a batch, and applying them to the logits.

The runner keeps one GrammarMasks; per sequence id a SequenceMatcher, dropped when the scheduler
releases the sequence (like the runner's seeded generators). A batch with no constrained row costs one
pass over its rows' params and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import llguidance
import numpy as np
import torch
from llguidance.torch import fill_next_token_bitmask_par

from engine.llm.grammar.compiler import GrammarCompiler
from engine.llm.grammar.matcher import SequenceMatcher
from engine.llm.sequence import Sequence, StepTokens


@dataclass
class StepMasks:
    """rows: the batch rows that are masked this step; bitmask[k]: row rows[k]'s allowed tokens, bit
    t % 32 of word t // 32 set for token t (llguidance's layout)."""

    rows: list[int]
    bitmask: torch.Tensor  # [len(rows), ceil(vocab / 32)] int32

    def apply(self, logits: torch.Tensor) -> None:
        """Disallowed tokens' logits become -inf, in place. logits: [batch, vocab] on the CPU."""
        # Invert the words, unpack them to one byte per token (0/1, read as bool without a copy), fill.
        banned_bytes = np.unpackbits((~self.bitmask).numpy().view(np.uint8), axis=-1, bitorder="little")
        banned = torch.from_numpy(banned_bytes).view(torch.bool)[:, : logits.shape[1]]
        if len(self.rows) == logits.shape[0]:
            logits.masked_fill_(banned, float("-inf"))
            return
        index = torch.tensor(self.rows, dtype=torch.long)
        logits[index] = logits[index].masked_fill_(banned, float("-inf"))


class GrammarMasks:
    def __init__(self, compiler: GrammarCompiler) -> None:
        self.compiler = compiler
        self.matchers: dict[int, SequenceMatcher] = {}  # seq_id -> grammar state
        self._executor = llguidance.LLExecutor()
        self._words = (compiler.vocab_size + 31) // 32
        eos_bits = torch.zeros(self._words * 32, dtype=torch.bool)
        eos_bits[compiler.eos_token_ids] = True
        # The same layout as llguidance's masks: 32 bits per int32 word, lowest bit first
        weights = torch.tensor([1 << b for b in range(32)], dtype=torch.int64)
        words = (eos_bits.view(self._words, 32).long() * weights).sum(-1)
        self._eos_only = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)

    def release(self, seq_ids: list[int]) -> None:
        for seq_id in seq_ids:
            self.matchers.pop(seq_id, None)

    def _matcher(self, seq: Sequence) -> SequenceMatcher:
        matcher = self.matchers.get(seq.seq_id)
        if matcher is None:
            structured = seq.params.structured
            assert structured is not None
            template = self.compiler.compile(structured)  # cached since the lane added the request
            matcher = SequenceMatcher(template, self.compiler.tokenizer, structured.start_after)
            self.matchers[seq.seq_id] = matcher
        return matcher

    def for_step(self, seqs: list[Sequence]) -> StepMasks | None:
        """The masks of this step's constrained rows whose grammar is active; None when there are none."""
        rows = [i for i, seq in enumerate(seqs) if seq.params.structured is not None]
        if not rows:
            return None
        active = [(i, m) for i in rows if (m := self._matcher(seqs[i])).matcher is not None]
        if not active:
            return None
        bitmask = torch.empty(len(active), self._words, dtype=torch.int32)
        live, broken = [], []
        for k, (_, m) in enumerate(active):
            assert m.matcher is not None
            (broken.append(k) if m.matcher.is_error() else live.append((m.matcher, k)))
        if live:
            fill_next_token_bitmask_par(self._executor, live, bitmask)
        for k in broken:  # only EOS: the output ends rather than run on unconstrained
            bitmask[k] = self._eos_only
        return StepMasks([i for i, _ in active], bitmask)

    def advance(self, seqs: list[Sequence], steps: list[StepTokens]) -> None:
        """Each constrained row's grammar consumes the token sampled for it."""
        if not self.matchers:
            return
        for seq, step in zip(seqs, steps, strict=True):
            matcher = self.matchers.get(seq.seq_id)
            if matcher is not None:
                matcher.advance(step.token_id)
