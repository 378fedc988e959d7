"""Token sampling with per-row settings and caller-provided noise.

Every row (call) has its own temperature and top-k, for text and for audio. A sample is drawn with
the Gumbel-max trick, argmax(logits / temperature + Gumbel(uniform)), from uniform noise the caller
passes in, so the engine can give each call its own reproducible random stream. The distribution is
upstream's (softmax at the temperature, restricted to the top k), but the random stream differs
from upstream's (`torch.multinomial`-style exponential race): the same seed gives other samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AUDIO_TEMPERATURE = 0.8
AUDIO_TOP_K = 250
TEXT_TEMPERATURE = 0.7
TEXT_TOP_K = 25


@dataclass
class Sampling:
    """Per-row settings, each [B]: temperature <= 0 is greedy (argmax), top_k <= 0 keeps every token."""

    text_temperature: torch.Tensor
    text_top_k: torch.Tensor
    audio_temperature: torch.Tensor
    audio_top_k: torch.Tensor

    @classmethod
    def default(cls, batch_size: int, device=None) -> Sampling:
        """Upstream's defaults for every row."""
        def full(value, dtype):
            return torch.full((batch_size,), value, dtype=dtype, device=device)
        return cls(full(TEXT_TEMPERATURE, torch.float32), full(TEXT_TOP_K, torch.long),
                   full(AUDIO_TEMPERATURE, torch.float32), full(AUDIO_TOP_K, torch.long))


def top_k_mask(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """[B, V] bool: the top_k[b] largest logits of each row (exactly that many, ties broken by sort order)."""
    order = logits.argsort(dim=-1, descending=True)
    ranks = torch.arange(logits.shape[-1], device=logits.device)
    keep_rank = (ranks < top_k[:, None]) | (top_k[:, None] <= 0)  # [B, V], by rank
    return torch.zeros_like(keep_rank).scatter_(-1, order, keep_rank)


def gumbel(uniform: torch.Tensor) -> torch.Tensor:
    tiny = torch.finfo(uniform.dtype).tiny
    return -torch.log(-torch.log(uniform.clamp(min=tiny)))


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
           uniform: torch.Tensor) -> torch.Tensor:
    """Tokens [B] from logits [B, V], per-row temperature [B] and top_k [B], and uniform noise [B, V] in [0, 1)."""
    logits = logits.float()
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature.float())[:, None]
    scores = scaled + gumbel(uniform.float())
    scores = scores.masked_fill(~top_k_mask(logits, top_k), float("-inf"))
    return torch.where(greedy, logits.argmax(dim=-1), scores.argmax(dim=-1))
