"""Multimodal rotary positions (M-RoPE) for Qwen2-VL and Qwen2.5-VL, in our paged forward.

Every token has three positions (temporal, height, width). Text tokens have the same number in all three;
an image or video's placeholder tokens take their grid coordinates, offset from where the prompt stands.
The rotary frequencies are split into `mrope_section` bands along the head dimension: band i rotates with
axis i % 3's position (transformers' `recomposition_frequencies`).

After the prompt, a token at index p sits at position p + delta in all three axes, where delta is the
prompt's highest position + 1 - its length (what transformers keeps as `rope_deltas`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

MROPE_AXES = 3  # temporal, height, width


class MRotaryEmbedding:
    """cos/sin for [3, n] positions (or [n]: a text token's three positions are equal), as the HF text
    model's rotary module computes them: fp32 angles, then the model's dtype."""

    def __init__(self, text_config: PretrainedConfig, device: torch.device, dtype: torch.dtype) -> None:
        rope = text_config.rope_parameters or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type {rope['rope_type']!r} is not supported by the paged runner")
        head_dim = getattr(text_config, "head_dim", None) or (
            text_config.hidden_size // text_config.num_attention_heads
        )
        theta = rope["rope_theta"]
        section = list(rope.get("mrope_section", [16, 24, 24]))
        if sum(section) != head_dim // 2:
            raise ValueError(f"mrope_section {section} does not cover head_dim / 2 = {head_dim // 2}")
        self.inv_freq = 1.0 / (
            theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim)
        )
        # which axis (0 temporal, 1 height, 2 width) each of the head_dim / 2 frequencies reads
        self.axis_of_freq = torch.tensor(
            [band % MROPE_AXES for band, width in enumerate(section) for _ in range(width)], device=device
        )
        self.dtype = dtype

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.dim() == 1:
            positions = positions.expand(MROPE_AXES, -1)
        # each frequency's position: [n, head_dim / 2], taken from the axis its band belongs to
        chosen = positions[self.axis_of_freq].T
        angles = chosen.float() * self.inv_freq
        cos, sin = angles.cos(), angles.sin()
        cos = torch.cat((cos, cos), dim=-1).to(self.dtype).unsqueeze(1)
        sin = torch.cat((sin, sin), dim=-1).to(self.dtype).unsqueeze(1)
        return cos, sin


@dataclass(frozen=True)
class GridItem:
    """One image or video in a prompt, as M-RoPE sees it: its patch grid (before the spatial merge) and
    how far apart its temporal positions are (1 for images; Qwen2.5-VL spaces video frames in time)."""

    grid_thw: tuple[int, int, int]
    time_interval: float = 1.0


def _vision_positions(start: int, item: GridItem, spatial_merge_size: int) -> torch.Tensor:
    """[3, t * h * w] positions of one item's placeholder tokens (transformers' get_vision_position_ids)."""
    t, h, w = item.grid_thw
    h, w = h // spatial_merge_size, w // spatial_merge_size
    # fp32 like transformers (a float32 interval times the frame index, truncated)
    temporal = (torch.arange(t) * torch.tensor(item.time_interval, dtype=torch.float32)).long() + start
    height = torch.arange(h) + start
    width = torch.arange(w) + start
    grid = torch.meshgrid(temporal, height, width, indexing="ij")
    return torch.stack(grid, dim=0).reshape(MROPE_AXES, -1)


def mrope_positions(
    token_ids: list[int], placeholder_ids: frozenset[int], items: list[GridItem], spatial_merge_size: int
) -> tuple[torch.Tensor, int]:
    """A prompt's [3, n] positions and its decode delta (transformers' get_rope_index, one prompt).

    `items` are the prompt's media in order; each fills the next t * h * w / merge^2 placeholder tokens.
    Text advances every axis by one per token; an item starts where the text stands, and the text after
    it resumes max(h, w) / merge further on. That is the installed transformers' rule (our tests are
    token-exact against it); Qwen's original code resumes after the item's highest position instead,
    which differs only for a video whose temporal positions outrun its width and height."""
    n = len(token_ids)
    chunks: list[torch.Tensor] = []
    pos = 0  # next position
    i = 0  # next token index
    pending = iter(items)
    while i < n:
        if token_ids[i] in placeholder_ids:
            item = next(pending, None)
            if item is None:
                raise ValueError("the prompt has more media placeholder tokens than media items")
            block = _vision_positions(pos, item, spatial_merge_size)
            if i + block.shape[1] > n:
                raise ValueError("a media item has more embeddings than placeholder tokens in the prompt")
            chunks.append(block)
            i += block.shape[1]
            pos += max(item.grid_thw[1], item.grid_thw[2]) // spatial_merge_size
            continue
        j = i
        while j < n and token_ids[j] not in placeholder_ids:
            j += 1
        chunks.append(torch.arange(pos, pos + j - i).expand(MROPE_AXES, -1))
        pos += j - i
        i = j
    if next(pending, None) is not None:
        raise ValueError("the prompt has fewer media placeholder tokens than media items")
    positions = torch.cat(chunks, dim=1) if chunks else torch.zeros(MROPE_AXES, 0, dtype=torch.long)
    delta = int(positions.max()) + 1 - n if n else 0
    return positions, delta
