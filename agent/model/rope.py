"""Rotary position embeddings (RoPE) as Kyutai's models apply them: interleaved pairs of each head's
dimensions turned by angles that grow with the position, one frequency per pair."""

from __future__ import annotations

import math

import torch


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
