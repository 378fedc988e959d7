"""The streaming transformer shared by Mimi and the LM (temporal and depth transformers).

State is explicit and batch-first: a `TransformerState` holds, per row, the position of the next
step and a ring of keys and values. Rows advance independently (each call in the engine has its
own position), so nothing here reads a position back to Python. Parameter names match the
released checkpoints (`layers.{i}.self_attn.in_proj_weight`, `norm1.alpha`, `gating.linear_in`...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransformerConfig:
    dim: int
    num_heads: int
    num_layers: int
    dim_feedforward: int
    context: int | None  # attention window in steps; None: unbounded (depth transformer)
    norm: Literal["layer_norm", "rms_norm_f32"]
    gating: Literal["none", "silu"]  # none: linear1 -> GELU -> linear2
    layer_scale: float | None = None
    rope: bool = True
    max_period: float = 10_000.0
    weights_per_step: int = 0  # >0: separate attention/MLP weights for each of that many steps
    # PersonaPlex's ring hides its oldest slot once full; Kyutai's moshi (the STT) lets a step see it.
    ring_hides_oldest: bool = True

    @property
    def capacity(self) -> int:
        """Steps held in the KV ring."""
        capacity = self.context or self.weights_per_step
        if not capacity:
            raise ValueError("a streaming transformer needs a context or weights_per_step")
        return capacity


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (`rms_norm_f32` upstream: eps 1e-8, weight named alpha)."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(1, 1, dim, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel; upstream's x * (alpha * rsqrt(mean(x^2) + eps)) up to float32 rounding.
        return F.rms_norm(x.float(), (x.shape[-1],), self.alpha.view(-1).float(), self.eps).to(x.dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


def make_norm(kind: str, dim: int) -> nn.Module:
    if kind == "layer_norm":
        return nn.LayerNorm(dim, eps=1e-5)
    if kind == "rms_norm_f32":
        return RMSNorm(dim)
    raise ValueError(f"unknown norm {kind!r}")


def rope_rotation(positions: torch.Tensor, head_dim: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [B, 1, T, head_dim/2] of per-row positions [B, T]: computed once, used by every layer."""
    exponents = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(exponents * (-math.log(max_period) * 2 / head_dim))
    angles = positions.float()[:, None, :, None] * freqs
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of `x` [..., B, H, T, D] by `rope_rotation`'s angles, in float32."""
    D = x.shape[-1]
    pairs = x.unflatten(-1, (D // 2, 2))
    real, imag = pairs[..., 0].float(), pairs[..., 1].float()
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.to(x.dtype).flatten(-2)


def step_linear(weight: torch.Tensor, x: torch.Tensor, num_steps: int, step: int) -> torch.Tensor:
    """A linear layer with one weight per step: x [B, T, in] at steps step..step+T-1."""
    weights = weight.view(num_steps, -1, weight.shape[1])
    if x.shape[1] == 1:  # the depth transformer's case: one step at a time
        return F.linear(x, weights[step])
    return torch.stack([F.linear(x[:, t], weights[step + t]) for t in range(x.shape[1])], dim=1)


class KVCache:
    """Preallocated keys and values of one layer: [B, H, capacity, head_dim] each."""

    def __init__(self, batch_size: int, num_heads: int, capacity: int, head_dim: int, device, dtype):
        shape = (batch_size, num_heads, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def write(self, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v [B, H, T, D] at ring slots `index` [B, T] (each row its own slots)."""
        B, H, T, D = k.shape
        index = index[:, None, :, None].expand(B, H, T, D)
        self.k.scatter_(2, index, k)
        self.v.scatter_(2, index, v)


@dataclass
class TransformerState:
    positions: torch.Tensor  # [B] long: absolute position of each row's next step
    key_positions: torch.Tensor  # [B, capacity] long: position held by each ring slot, -1 if empty
    caches: list[KVCache]

    @property
    def capacity(self) -> int:
        return self.key_positions.shape[1]

    def reset(self, rows: torch.Tensor) -> None:
        """Make the rows selected by the bool mask `rows` [B] as new (their keys become invisible)."""
        self.positions.masked_fill_(rows, 0)
        self.key_positions.masked_fill_(rows[:, None], -1)


class Attention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        steps = config.weights_per_step or 1
        self.in_proj_weight = nn.Parameter(torch.empty(steps * 3 * config.dim, config.dim))
        self.out_proj = nn.Linear(config.dim, steps * config.dim, bias=False)

    def forward(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor,
                cache: KVCache | None, write_index: torch.Tensor | None, step: int) -> torch.Tensor:
        # x: [B, T, D]; rotation: rope's (cos, sin); mask: [B, 1, T, S] (S keys: the ring, or T without a cache)
        cfg = self.config
        B, T, D = x.shape
        if cfg.weights_per_step:
            qkv = step_linear(self.in_proj_weight, x, cfg.weights_per_step, step)
        else:
            qkv = F.linear(x, self.in_proj_weight)
        qkv = qkv.view(B, T, 3, cfg.num_heads, D // cfg.num_heads).permute(2, 0, 3, 1, 4)  # [3, B, H, T, Dh]
        if rotation is not None:
            q, k = apply_rope(qkv[:2], *rotation)  # queries and keys rotated together
            v = qkv[2]
        else:
            q, k, v = qkv
        if cache is not None:
            cache.write(write_index, k, v)
            k, v = cache.k, cache.v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, Dh]
        y = y.transpose(1, 2).reshape(B, T, D)
        if cfg.weights_per_step:
            return step_linear(self.out_proj.weight, y, cfg.weights_per_step, step)
        return self.out_proj(y)


class GatedMLP(nn.Module):
    """SiLU-gated feed-forward (upstream `ActivationGating`): hidden = 2/3 of dim_feedforward, or 21/8 dim."""

    def __init__(self, dim: int, dim_feedforward: int):
        super().__init__()
        hidden = (21 * dim) // 8 if dim_feedforward == 4 * dim else (2 * dim_feedforward) // 3
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.linear_in(x).unflatten(-1, (2, -1)).unbind(-2)
        return self.linear_out(F.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.norm1 = make_norm(config.norm, config.dim)
        self.self_attn = Attention(config)
        self.norm2 = make_norm(config.norm, config.dim)
        if config.gating == "none":
            self.linear1 = nn.Linear(config.dim, config.dim_feedforward, bias=False)
            self.linear2 = nn.Linear(config.dim_feedforward, config.dim, bias=False)
        elif config.weights_per_step:
            self.gating = nn.ModuleList(GatedMLP(config.dim, config.dim_feedforward)
                                        for _ in range(config.weights_per_step))
        else:
            self.gating = GatedMLP(config.dim, config.dim_feedforward)
        if config.layer_scale is not None:
            self.layer_scale_1 = LayerScale(config.dim, config.layer_scale)
            self.layer_scale_2 = LayerScale(config.dim, config.layer_scale)
        else:
            self.layer_scale_1 = self.layer_scale_2 = nn.Identity()

    def feed_forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if self.config.gating == "none":
            return self.linear2(F.gelu(self.linear1(x)))
        if self.config.weights_per_step:
            return torch.cat([self.gating[step + t](x[:, t:t + 1]) for t in range(x.shape[1])], dim=1)
        return self.gating(x)

    def forward(self, x, rotation, mask, cache, write_index, step):
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), rotation, mask, cache, write_index, step))
        return x + self.layer_scale_2(self.feed_forward(self.norm2(x), step))


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))

    def init_state(self, batch_size: int, device=None, dtype=None, capacity: int | None = None) -> TransformerState:
        """A fresh state. A smaller `capacity` than the config's suits a state that never holds more
        than that many steps (a prompt's prefill): its steps are then the same, with less memory."""
        cfg = self.config
        param = self.layers[0].self_attn.in_proj_weight
        device, dtype = device or param.device, dtype or param.dtype
        capacity = capacity or cfg.capacity
        caches = [KVCache(batch_size, cfg.num_heads, capacity, cfg.dim // cfg.num_heads, device, dtype)
                  for _ in range(cfg.num_layers)]
        return TransformerState(
            positions=torch.zeros(batch_size, dtype=torch.long, device=device),
            key_positions=torch.full((batch_size, capacity), -1, dtype=torch.long, device=device),
            caches=caches,
        )

    def forward(self, x: torch.Tensor, state: TransformerState | None = None, step: int = 0) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]. With a state, the T steps follow each row's earlier steps.

        `step` selects the per-step weights (depth transformer) for x[:, 0]; it is the same for every row.
        """
        B, T, _ = x.shape
        offsets = torch.arange(T, device=x.device)
        if state is None:
            positions = offsets.expand(B, T)
            key_positions, write_index = positions, None
        else:
            if T > state.capacity:
                raise ValueError(f"{T} steps at once exceed the KV ring of {state.capacity}")
            positions = state.positions[:, None] + offsets  # [B, T]
            write_index = positions % state.capacity
            state.key_positions.scatter_(1, write_index, positions)
            key_positions = state.key_positions
        delta = positions[:, :, None] - key_positions[:, None, :]  # [B, T, S]
        mask = (key_positions[:, None, :] >= 0) & (delta >= 0)
        if state is not None and self.config.ring_hides_oldest:
            # PersonaPlex's ring hides its oldest slot once full, so a streaming step sees at most
            # capacity - 1 earlier keys. The reference outputs depend on it: keep it.
            end = positions[:, -1:, None] + 1  # [B, 1, 1]
            mask &= key_positions[:, None, :] > end - state.capacity
        if self.config.context is not None:
            mask &= delta < self.config.context
        mask = mask[:, None]  # [B, 1, T, S]
        cfg = self.config
        rotation = rope_rotation(positions, cfg.dim // cfg.num_heads, cfg.max_period) if cfg.rope else None
        for i, layer in enumerate(self.layers):
            cache = state.caches[i] if state is not None else None
            x = layer(x, rotation, mask, cache, write_index, step)
        if state is not None:
            state.positions.add_(T)
        return x
