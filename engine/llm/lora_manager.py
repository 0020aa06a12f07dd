"""Which LoRA adapters the LLM lane serves, and which device slot each running one holds (pure Python:
the scheduler consults it, so no torch here; engine/models/lora.py holds the tensors).

An adapter is registered under a name (a load); requests name it and their sequences carry its id. A
sequence holds a slot while it runs: the first running sequence of an adapter takes a free slot, the last
one to stop frees it, and the scheduler admits no sequence whose adapter would need a slot when none is
free, so one step never mixes more than `max_loras` adapters. Unloading takes the name away at once
(new requests get model_not_found); the sequences already accepted keep the adapter to the end, and its
weights are dropped when the last of them finishes.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from engine.errors import InvalidParameter
from engine.llm.sequence import Sequence

_adapter_ids = itertools.count(1)


@dataclass(frozen=True)
class LoRAAdapter:
    name: str
    path: str
    rank: int
    adapter_id: int = field(default_factory=lambda: next(_adapter_ids))


@dataclass(frozen=True)
class LoRAAdapterInfo:
    """A served LoRA adapter, as front ends list it (engine/interface.py)."""

    name: str
    path: str
    parent: str  # the base model's name
    rank: int
    nbytes: int  # its weights in CPU memory (fp32)


@dataclass
class LoRAStep:
    """What the runner needs of one step's adapters: slot -> (adapter id, path) for every adapter the
    step's sequences use, each sequence's slot by seq id, and adapters whose weights may be dropped."""

    assigned: dict[int, tuple[int, str]]
    seq_slots: dict[int, int]
    dropped: list[int]


class LoRAManager:
    def __init__(self, max_loras: int) -> None:
        self.max_loras = max_loras
        self.served: dict[str, LoRAAdapter] = {}  # by name: what requests may ask for
        self._by_id: dict[int, LoRAAdapter] = {}  # every adapter a sequence may still use
        self._accepted: Counter[int] = Counter()  # unfinished sequences per adapter id
        self._running: Counter[int] = Counter()  # running sequences per adapter id
        self._slot_of: dict[int, int] = {}  # adapter id -> slot, while it has running sequences
        self._free_slots = list(range(max_loras))
        self._holding: set[int] = set()  # seq ids counted in _running
        self._dropped: list[int] = []

    # ---- registry (event loop) ----

    def check_new_name(self, name: str, base_names: tuple[str, ...]) -> None:
        if not name or name in base_names:
            raise InvalidParameter(
                "lora_name", f"{name!r} cannot name an adapter: it is the base model's name"
            )
        if name in self.served:
            raise InvalidParameter("lora_name", f"The lora adapter '{name}' has already been loaded.")

    def register(self, adapter: LoRAAdapter) -> None:
        self.served[adapter.name] = adapter
        self._by_id[adapter.adapter_id] = adapter

    def unregister(self, name: str) -> LoRAAdapter:
        """Stop serving `name` (KeyError if it is not served); its running sequences finish first."""
        adapter = self.served.pop(name)
        if not self._accepted[adapter.adapter_id]:
            self._drop(adapter.adapter_id)
        return adapter

    def resolve(self, name: str) -> int:
        adapter = self.served.get(name)
        if adapter is None:
            raise InvalidParameter("model", f"The model '{name}' does not exist", code="model_not_found")
        return adapter.adapter_id

    # ---- sequences (scheduler) ----

    def accept(self, seq: Sequence) -> None:
        if seq.lora_id is not None:
            self._accepted[seq.lora_id] += 1

    def can_run(self, seq: Sequence) -> bool:
        """Whether `seq` may start now without one step needing more than max_loras adapters."""
        return seq.lora_id is None or seq.lora_id in self._slot_of or bool(self._free_slots)

    def start(self, seq: Sequence) -> None:
        lora_id = seq.lora_id
        if lora_id is None or seq.seq_id in self._holding:
            return
        if lora_id not in self._slot_of:
            self._slot_of[lora_id] = self._free_slots.pop(0)  # lowest free: used slots stay packed
            self._free_slots.sort()
        self._running[lora_id] += 1
        self._holding.add(seq.seq_id)

    def stop(self, seq: Sequence, finished: bool) -> None:
        """`seq` was preempted (finished=False) or is done."""
        lora_id = seq.lora_id
        if lora_id is None:
            return
        if seq.seq_id in self._holding:
            self._holding.discard(seq.seq_id)
            self._running[lora_id] -= 1
            if not self._running[lora_id]:
                del self._running[lora_id]
                self._free_slots.append(self._slot_of.pop(lora_id))
                self._free_slots.sort()
        if finished:
            self._accepted[lora_id] -= 1
            if not self._accepted[lora_id]:
                del self._accepted[lora_id]
                if self._by_id.get(lora_id) not in self.served.values():
                    self._drop(lora_id)

    def _drop(self, lora_id: int) -> None:
        self._by_id.pop(lora_id, None)
        self._dropped.append(lora_id)

    def step(self, seqs: list[Sequence]) -> LoRAStep | None:
        """The step's adapter layout; None when none of its sequences uses one (and nothing to drop)."""
        seq_slots = {s.seq_id: self._slot_of[s.lora_id] for s in seqs if s.lora_id is not None}
        if not seq_slots and not self._dropped:
            return None
        assigned = {}
        for seq in seqs:
            if seq.lora_id is not None:
                adapter = self._by_id[seq.lora_id]
                assigned[self._slot_of[seq.lora_id]] = (adapter.adapter_id, adapter.path)
        dropped, self._dropped = self._dropped, []
        return LoRAStep(assigned, seq_slots, dropped)
