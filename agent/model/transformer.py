"""The streaming transformer shared by Mimi and the LM (temporal and depth transformers).

State is explicit and batch-first: a `TransformerState` holds, per row, the position of the next
step and a ring of keys and values (`agent.model.kv_cache`: the model's dtype or FP8). Rows advance independently (each call in the engine has its
own position), so nothing here reads a position back to Python. Parameter names match the
released checkpoints (`layers.{i}.self_attn.in_proj_weight`, `norm1.alpha`, `gating.linear_in`...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from agent.model.fp8 import fp8_linear, quantize_weight
from agent.model.kv_cache import Fp8KVCache, KVCache, KVDtype, Turn, Visibility, make_kv_cache
from agent.model.rope import apply_rope, rope_rotation


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


@dataclass(frozen=True)
class Rotation:
    """RoPE's (cos, sin) of the steps, and the turn from each step's query to the one that scores
    pinned ring slots (`agent.model.kv_cache.Turn`), or None."""

    steps: tuple[torch.Tensor, torch.Tensor]
    pinned: Turn | None = None


def step_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, num_steps: int = 1,
                step: int = 0) -> torch.Tensor:
    """x [B, T, in] @ weight.T, with one weight per step when num_steps > 1 (x at steps step..step+T-1).

    `scale` [out] marks an FP8 weight with a scale per output channel (`agent.model.fp8`).
    """
    if num_steps == 1:
        return linear(x, weight, scale)
    weights = weight.view(num_steps, -1, weight.shape[1])
    scales = None if scale is None else scale.view(num_steps, -1)

    def at(t: int) -> torch.Tensor:
        return linear(x[:, t:t + 1], weights[step + t], None if scales is None else scales[step + t])

    if x.shape[1] == 1:  # the depth transformer's case: one step at a time
        return at(0)
    return torch.cat([at(t) for t in range(x.shape[1])], dim=1)


def linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    if scale is None:
        return F.linear(x, weight)
    return fp8_linear(x, weight, scale)


class Linear(nn.Module):
    """A linear layer without bias, its weight named as nn.Linear's; `agent.model.fp8.quantize_weights`
    may make the weight FP8 e4m3, with a float32 `scale` per output channel."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.register_buffer("scale", None)

    def forward(self, x: torch.Tensor, num_steps: int = 1, step: int = 0) -> torch.Tensor:
        return step_linear(x, self.weight, self.scale, num_steps, step)


@dataclass
class TransformerState:
    positions: torch.Tensor  # [B] long: absolute position of each row's next step
    key_positions: torch.Tensor  # [B, capacity] long: position held by each ring slot, -1 if empty
    caches: list[KVCache | Fp8KVCache]
    # [B] long: ring slots 0..pinned-1 keep the row's first steps for good (a persona prompt,
    # `agent.model.kv_cache.Visibility`); None: a ring that never pins, attended as upstream's.
    pinned: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        return self.key_positions.shape[1]

    def reset(self, rows: torch.Tensor) -> None:
        """Make the rows selected by the bool mask `rows` [B] as new (their keys become invisible)."""
        self.positions.masked_fill_(rows, 0)
        self.key_positions.masked_fill_(rows[:, None], -1)
        if self.pinned is not None:
            self.pinned.masked_fill_(rows, 0)

    def write_index(self, positions: torch.Tensor) -> torch.Tensor:
        """The ring slots [B, T] of positions [B, T]: position % capacity, or, past a row's pinned
        slots, pinned + (position - pinned) % (capacity - pinned), so the pinned slots stay."""
        if self.pinned is None:
            return positions % self.capacity
        pinned = self.pinned[:, None]
        return torch.where(positions < pinned, positions, pinned + (positions - pinned) % (self.capacity - pinned))


class Attention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        steps = config.weights_per_step or 1
        self.in_proj_weight = nn.Parameter(torch.empty(steps * 3 * config.dim, config.dim))
        self.register_buffer("in_proj_scale", None)  # set when the weight is FP8, as Linear's scale
        self.out_proj = Linear(config.dim, steps * config.dim)

    def forward(self, x: torch.Tensor, rotation: Rotation | None, visibility: Visibility,
                cache: KVCache | Fp8KVCache | None, write_index: torch.Tensor | None, step: int) -> torch.Tensor:
        # x: [B, T, D]; rotation: rope's; visibility: of the ring's S slots, or of the T steps without a cache
        cfg = self.config
        B, T, D = x.shape
        steps = cfg.weights_per_step or 1
        qkv = step_linear(x, self.in_proj_weight, self.in_proj_scale, steps, step)
        qkv = qkv.view(B, T, 3, cfg.num_heads, D // cfg.num_heads).permute(2, 0, 3, 1, 4)  # [3, B, H, T, Dh]
        if rotation is not None:
            q, k = apply_rope(qkv[:2], *rotation.steps)  # queries and keys rotated together
            v = qkv[2]
        else:
            q, k, v = qkv
        if cache is not None:
            cache.write(write_index, k, v)
            y = cache.attend(q, visibility, rotation.pinned if rotation is not None else None)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=visibility.mask)  # [B, H, T, Dh]
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.out_proj(y, steps, step)


class GatedMLP(nn.Module):
    """SiLU-gated feed-forward (upstream `ActivationGating`): hidden = 2/3 of dim_feedforward, or 21/8 dim."""

    def __init__(self, dim: int, dim_feedforward: int):
        super().__init__()
        hidden = (21 * dim) // 8 if dim_feedforward == 4 * dim else (2 * dim_feedforward) // 3
        self.linear_in = Linear(dim, 2 * hidden)
        self.linear_out = Linear(hidden, dim)

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
            self.linear1 = Linear(config.dim, config.dim_feedforward)
            self.linear2 = Linear(config.dim_feedforward, config.dim)
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

    def forward(self, x, rotation, visibility, cache, write_index, step):
        x = x + self.layer_scale_1(self.self_attn(self.norm1(x), rotation, visibility, cache, write_index, step))
        return x + self.layer_scale_2(self.feed_forward(self.norm2(x), step))


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))

    def to_fp8_weights(self) -> None:
        """Quantise the weight of every linear layer (attention and feed-forward) to FP8, in place."""
        for layer in self.layers:
            attention = layer.self_attn
            attention.in_proj_weight, attention.in_proj_scale = quantize_weight(attention.in_proj_weight)
            for module in layer.modules():
                if isinstance(module, Linear):
                    module.weight, module.scale = quantize_weight(module.weight)

    def init_state(self, batch_size: int, device=None, dtype=None, capacity: int | None = None,
                   kv_dtype: KVDtype = "bf16", pinnable: bool = False) -> TransformerState:
        """A fresh state. A smaller `capacity` than the config's suits a state that never holds more
        than that many steps (a prompt's prefill): its steps are then the same, with less memory.
        `dtype` is the activations' (default: the norms', which FP8 weights leave as they are);
        `kv_dtype` the ring's. A `pinnable` state's rows may pin their first steps
        (`TransformerState.pinned`, none pinned at first)."""
        if pinnable and not (self.config.rope and self.config.ring_hides_oldest):
            raise ValueError("only a rotary ring that hides its oldest slot (PersonaPlex's) pins steps")
        cfg = self.config
        param = next(self.layers[0].norm1.parameters())
        device, dtype = device or param.device, dtype or param.dtype
        capacity = capacity or cfg.capacity
        caches = [make_kv_cache(kv_dtype, batch_size, cfg.num_heads, capacity, cfg.dim // cfg.num_heads, device, dtype)
                  for _ in range(cfg.num_layers)]
        return TransformerState(
            positions=torch.zeros(batch_size, dtype=torch.long, device=device),
            key_positions=torch.full((batch_size, capacity), -1, dtype=torch.long, device=device),
            caches=caches,
            pinned=torch.zeros(batch_size, dtype=torch.long, device=device) if pinnable else None,
        )

    def forward(self, x: torch.Tensor, state: TransformerState | None = None, step: int = 0) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]. With a state, the T steps follow each row's earlier steps.

        `step` selects the per-step weights (depth transformer) for x[:, 0]; it is the same for every row.
        """
        B, T, _ = x.shape
        offsets = torch.arange(T, device=x.device)
        if state is None:
            positions = offsets.expand(B, T)
            visibility = Visibility(positions, positions, capacity=None, context=self.config.context)
            write_index = None
        else:
            if T > state.capacity:
                raise ValueError(f"{T} steps at once exceed the KV ring of {state.capacity}")
            positions = state.positions[:, None] + offsets  # [B, T]
            write_index = state.write_index(positions)
            state.key_positions.scatter_(1, write_index, positions)
            hides_oldest = state.capacity if self.config.ring_hides_oldest else None
            visibility = Visibility(positions, state.key_positions, hides_oldest, self.config.context, state.pinned)
        cfg = self.config
        rotation = None
        if cfg.rope:
            head_dim = cfg.dim // cfg.num_heads
            pinned = None
            if state is not None and state.pinned is not None:  # once for every layer
                pinned = rope_rotation(visibility.pinned_positions - positions, head_dim, cfg.max_period)
            rotation = Rotation(rope_rotation(positions, head_dim, cfg.max_period), pinned)
        for i, layer in enumerate(self.layers):
            cache = state.caches[i] if state is not None else None
            x = layer(x, rotation, visibility, cache, write_index, step)
        if state is not None:
            state.positions.add_(T)
        return x
