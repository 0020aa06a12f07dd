"""LoRA adapters on the paged Llama: read a PEFT adapter, keep it in a slot, apply many at once.

The base weights are never merged or copied. Each loaded adapter sits in one of `max_loras` slots of
stacked, rank-padded A and B tensors (B pre-scaled by lora_alpha / r, or / sqrt(r) with rsLoRA). A step's
`LoRABatch` says which token rows use which slot; only those rows pay anything, and a step with none
gets no `LoRABatch` at all. Decode rows are grouped by slot and run through two batched matmuls (the
S-LoRA/Punica way: rows gather their slot's A and B); prefill rows, many tokens per slot, run one pair of
matmuls per slot in use.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import PretrainedConfig

from engine.errors import InvalidParameter

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
TARGET_MODULES = ATTENTION_MODULES + MLP_MODULES
_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$"
)
GROUPED_ROWS_PER_SLOT = 64  # above this many rows for one slot (prefill), one matmul pair per slot


def module_shapes(config: PretrainedConfig) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each projection LoRA may target."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    return {
        "q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
        "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden),
    }  # fmt: skip


@dataclass
class LoRAWeights:
    """One adapter's tensors, on the CPU: (layer, module) -> (A [r, in], B [out, r])."""

    rank: int
    scaling: float
    pairs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.pairs.values())

    @property
    def modules(self) -> set[str]:
        return {module for _, module in self.pairs}


def _bad(message: str) -> InvalidParameter:
    return InvalidParameter("lora_path", message)


def _normalized(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")


def _check_base(config: dict, base_names: list[str]) -> None:
    """Refuse an adapter whose config names a hub model that is clearly not this one (local paths and
    unnamed bases are left to the shape checks)."""
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base or base.startswith((".", "/", "~")) or Path(base).exists():
        return
    wanted = _normalized(base)
    ours = [_normalized(n) for n in base_names if n]
    if not any(wanted in name or name in wanted for name in ours):
        raise _bad(f"the adapter was trained for {base!r}, not for this server's model ({base_names[0]!r})")


def _read_config(path: Path, max_rank: int, base_names: list[str]) -> tuple[int, float]:
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise _bad(f"cannot read {path / 'adapter_config.json'}: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise _bad("adapter_config.json is not a PEFT LoRA config (peft_type LORA)")
    for key, ok in (("use_dora", False), ("fan_in_fan_out", False), ("bias", "none")):
        if config.get(key, ok) not in (ok, None):
            raise _bad(f"adapter_config.json sets {key}={config[key]!r}, which is not supported")
    for key in ("modules_to_save", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise _bad(f"adapter_config.json sets {key}, which is not supported")
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, int | float):
        raise _bad("adapter_config.json needs a positive integer r and a numeric lora_alpha")
    if rank > max_rank:
        raise _bad(f"the adapter's rank {rank} is over this server's --max-lora-rank {max_rank}")
    _check_base(config, base_names)
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return rank, float(scaling)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    file = path / "adapter_model.safetensors"
    try:
        return load_file(str(file))
    except Exception as exc:  # noqa: BLE001 - any failure to parse the file is the caller's bad input
        raise _bad(f"cannot read {file}: {type(exc).__name__}: {exc}") from None


def read_peft_adapter(
    path: str, config: PretrainedConfig, max_rank: int, base_names: list[str]
) -> LoRAWeights:
    """A PEFT LoRA adapter directory, checked against the base model. Raises InvalidParameter for a
    missing or corrupt file, a rank over `max_rank`, or weights that do not fit this model."""
    where = Path(path)
    rank, scaling = _read_config(where, max_rank, base_names)
    shapes, num_layers = module_shapes(config), config.num_hidden_layers
    halves: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in _read_tensors(where).items():
        match = _KEY.match(key)
        if match is None or match[3] not in TARGET_MODULES:
            raise _bad(f"the adapter has a tensor this server cannot apply: {key}")
        layer, module = int(match[1]), match[3]
        if layer >= num_layers or (module in ATTENTION_MODULES) != (match[2] == "self_attn"):
            raise _bad(f"{key} does not name a layer of this model ({num_layers} layers)")
        halves.setdefault((layer, module), {})[match[4]] = tensor
    if not halves:
        raise _bad("the adapter holds no LoRA weights")
    pairs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for (layer, module), half in sorted(halves.items()):
        a, b = half.get("A"), half.get("B")
        in_features, out_features = shapes[module]
        if a is None or b is None:
            raise _bad(f"layer {layer} {module} has only one of lora_A and lora_B")
        if tuple(a.shape) != (rank, in_features) or tuple(b.shape) != (out_features, rank):
            raise _bad(
                f"layer {layer} {module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not fit this "
                f"model's ({in_features} -> {out_features}) at rank {rank}: the adapter is for another model"
            )
        pairs[(layer, module)] = (a.float().contiguous(), b.float().contiguous())
    return LoRAWeights(rank, scaling, pairs)


class LoRASlots:
    """`max_loras` slots of stacked adapter weights on the model's device, padded to `max_rank`:
    a[module]: [layers, slots, max_rank, in] (A), b[module]: [layers, slots, max_rank, out] (B^T, pre-scaled;
    laid out so that a step's rank slice stays contiguous for the batched matmul)."""

    def __init__(self, config: PretrainedConfig, max_loras: int, max_rank: int, device: str,
                 dtype: torch.dtype) -> None:  # fmt: skip
        layers = config.num_hidden_layers
        self.a = {m: torch.zeros(layers, max_loras, max_rank, i, dtype=dtype, device=device)
                  for m, (i, _) in module_shapes(config).items()}  # fmt: skip
        self.b = {m: torch.zeros(layers, max_loras, max_rank, o, dtype=dtype, device=device)
                  for m, (_, o) in module_shapes(config).items()}  # fmt: skip
        self.dtype = dtype
        self.ranks = [0] * max_loras
        self.modules: list[set[str]] = [set() for _ in range(max_loras)]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (*self.a.values(), *self.b.values()))

    def fill(self, slot: int, weights: LoRAWeights) -> None:
        for module in TARGET_MODULES:
            self.a[module][:, slot].zero_()
            self.b[module][:, slot].zero_()
        for (layer, module), (a, b) in weights.pairs.items():
            self.a[module][layer, slot, : weights.rank].copy_(a)
            self.b[module][layer, slot, : weights.rank].copy_((b * weights.scaling).T)
        self.ranks[slot] = weights.rank
        self.modules[slot] = weights.modules


class LoRABatch:
    """One step's adapter rows: which token rows use which slot, laid out for the apply."""

    def __init__(self, slots: LoRASlots, row_slots: list[int], device: str) -> None:
        by_slot: dict[int, list[int]] = {}
        for row, slot in enumerate(row_slots):
            if slot >= 0:
                by_slot.setdefault(slot, []).append(row)
        self.slots = slots
        self.rank = max(slots.ranks[s] for s in by_slot)
        self.modules = set().union(*(slots.modules[s] for s in by_slot))
        self.top = max(by_slot) + 1  # slots [0, top) are used in the batched form
        group = max(len(rows) for rows in by_slot.values())
        self.grouped = group <= GROUPED_ROWS_PER_SLOT
        if self.grouped:
            # [top, group] row indices, padded with row 0 whose entries `real` zeroes (they add exactly 0)
            gather = [[0] * group for _ in range(self.top)]
            real = [[0.0] * group for _ in range(self.top)]
            for slot, rows in by_slot.items():
                gather[slot][: len(rows)] = rows
                real[slot][: len(rows)] = [1.0] * len(rows)
            self.gather = torch.tensor(gather, dtype=torch.long, device=device)
            self.real = torch.tensor(real, dtype=slots.dtype, device=device).unsqueeze(-1)
            self.dest = self.gather.flatten()
        else:
            self.segments = [
                (s, torch.tensor(r, dtype=torch.long, device=device)) for s, r in by_slot.items()
            ]

    def add(self, y: torch.Tensor, x: torch.Tensor, layer: int, module: str) -> torch.Tensor:
        """y (the base projection of x) plus each adapter row's B(A(x)) * scaling, in place."""
        if module not in self.modules:
            return y
        x = x.to(self.slots.dtype)
        a = self.slots.a[module][layer, : self.top, : self.rank]  # [top, r, in]
        b = self.slots.b[module][layer, : self.top, : self.rank]  # [top, r, out]
        if self.grouped:
            xa = torch.bmm(x[self.gather], a.transpose(1, 2)) * self.real  # [top, group, r]
            delta = torch.bmm(xa, b).flatten(0, 1)  # [top * group, out]
            return y.index_add_(0, self.dest, delta.to(y.dtype))
        for slot, rows in self.segments:
            y.index_add_(0, rows, ((x[rows] @ a[slot].T) @ b[slot]).to(y.dtype))
        return y


def lora_project(module: torch.nn.Module, x: torch.Tensor, lora: LoRABatch | None, layer: int,
                 name: str) -> torch.Tensor:  # fmt: skip
    y = module(x)
    return y if lora is None else lora.add(y, x, layer, name)


def lora_mlp(mlp: torch.nn.Module, x: torch.Tensor, lora: LoRABatch | None, layer: int) -> torch.Tensor:
    """The Llama MLP, down(act(gate(x)) * up(x)), with each projection's adapter rows added."""
    if lora is None:
        return mlp(x)
    gate = lora_project(mlp.gate_proj, x, lora, layer, "gate_proj")
    up = lora_project(mlp.up_proj, x, lora, layer, "up_proj")
    return lora_project(mlp.down_proj, mlp.act_fn(gate) * up, lora, layer, "down_proj")


class LoRAStore:
    """The runner's adapters (inference thread only): weights read from disk, kept on the CPU for the
    `max_cpu` most recently used, and the device slots they are copied into when a step needs them."""

    def __init__(self, config: PretrainedConfig, base_names: list[str], max_loras: int, max_rank: int,
                 max_cpu: int, device: str, dtype: torch.dtype) -> None:  # fmt: skip
        self.config = config
        self.base_names = base_names
        self.max_loras, self.max_rank, self.max_cpu = max_loras, max_rank, max_cpu
        self.device, self.dtype = device, dtype
        self.cpu: OrderedDict[int, LoRAWeights] = OrderedDict()
        self.slots: LoRASlots | None = None  # allocated with the first adapter
        self.slot_holds: list[int | None] = [None] * max_loras  # adapter id in each slot

    def read(self, path: str) -> LoRAWeights:
        return read_peft_adapter(path, self.config, self.max_rank, self.base_names)

    def keep(self, adapter_id: int, weights: LoRAWeights) -> None:
        self.cpu[adapter_id] = weights
        self.cpu.move_to_end(adapter_id)
        while len(self.cpu) > self.max_cpu:
            self.cpu.popitem(last=False)  # read back from disk if it is asked for again

    def forget(self, adapter_ids: list[int]) -> None:
        for adapter_id in adapter_ids:
            self.cpu.pop(adapter_id, None)
            if adapter_id in self.slot_holds:
                self.slot_holds[self.slot_holds.index(adapter_id)] = None

    def batch(self, assigned: dict[int, tuple[int, str]], row_slots: list[int]) -> LoRABatch | None:
        """The step's LoRABatch, after copying into their slots the adapters (`assigned`: slot ->
        (adapter id, path)) not there yet; None when no row uses an adapter."""
        if all(s < 0 for s in row_slots):
            return None
        if self.slots is None:
            self.slots = LoRASlots(self.config, self.max_loras, self.max_rank, self.device, self.dtype)
        for slot, (adapter_id, path) in assigned.items():
            if self.slot_holds[slot] != adapter_id:
                weights = self.cpu.get(adapter_id)
                if weights is None:
                    weights = self.read(path)
                    self.keep(adapter_id, weights)
                self.cpu.move_to_end(adapter_id)
                self.slots.fill(slot, weights)
                self.slot_holds[slot] = adapter_id
        return LoRABatch(self.slots, row_slots, self.device)
