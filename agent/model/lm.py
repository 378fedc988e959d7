"""The PersonaPlex language model: a temporal transformer over 17 token streams and a depth transformer.

Each step the model reads one frame of 17 tokens (index 0 text, 1..8 the agent's audio codebooks,
9..16 the user's), sums their embeddings and runs the temporal transformer, which predicts the text
token. The depth transformer (depformer) then predicts the audio codebooks one after the other, each
conditioned on the temporal output and on the token chosen just before it, with its own weights per
codebook. Parameter names match the released checkpoint (`emb.{k}`, `text_linear`, `depformer_in.{k}`...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from agent.model.transformer import (
    RMSNorm,
    Transformer,
    TransformerConfig,
    TransformerState,
)

AGENT_CODEBOOKS = 8  # codebooks 1..8 of a frame; the user's are 9..16
NO_TOKEN = -1  # a token whose embedding is zero (upstream `zero_token_id`)
PERSONAPLEX_DELAYS = (0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1)

# Upstream LM options this implementation hard-codes, with the only value it supports.
FIXED_UPSTREAM_OPTIONS = {
    "norm": "rms_norm_f32", "gating": "silu", "positional_embedding": "rope", "causal": True,
    "layer_scale": None, "depformer_gating": "silu", "depformer_pos_emb": "none",
    "depformer_multi_linear": True, "depformer_weights_per_step": True, "depformer_causal": True,
    "depformer_layer_scale": None, "depformer_weights_per_step_schedule": None, "norm_emb": False,
    "bias_proj": False,
}


@dataclass(frozen=True)
class LMConfig:
    dim: int
    num_heads: int
    num_layers: int
    hidden_scale: float
    context: int
    text_card: int  # text vocabulary; the text embedding has one more row, the initial token
    card: int  # audio vocabulary; the audio embeddings have one more row, the initial token
    n_q: int  # audio codebooks in a frame: the agent's and the user's
    dep_q: int  # audio codebooks the depformer predicts
    depformer_dim: int
    depformer_dim_feedforward: int
    depformer_num_heads: int
    depformer_num_layers: int
    delays: tuple[int, ...]  # per stream (text first), in steps
    text_padding_id: int = 3  # upstream `existing_text_padding_id`, the prompt's `zero_text_code`
    max_period: float = 10_000.0

    @classmethod
    def from_upstream(cls, kwargs: dict) -> LMConfig:
        """The config from upstream's `LMModel` keyword arguments (config.json "lm", loaders `_lm_kwargs`)."""
        for name, value in FIXED_UPSTREAM_OPTIONS.items():
            if kwargs.get(name, value) != value:
                raise ValueError(f"unsupported LM option {name}={kwargs[name]!r} (supported: {value!r})")
        if kwargs.get("existing_text_padding_id") is None:
            raise ValueError("unsupported LM option existing_text_padding_id=None (PersonaPlex pads text with 3)")
        return cls(
            dim=kwargs["dim"], num_heads=kwargs["num_heads"], num_layers=kwargs["num_layers"],
            hidden_scale=kwargs["hidden_scale"], context=kwargs["context"], text_card=kwargs["text_card"],
            card=kwargs["card"], n_q=kwargs["n_q"], dep_q=kwargs["dep_q"],
            depformer_dim=kwargs["depformer_dim"], depformer_dim_feedforward=kwargs["depformer_dim_feedforward"],
            depformer_num_heads=kwargs["depformer_num_heads"], depformer_num_layers=kwargs["depformer_num_layers"],
            delays=tuple(kwargs["delays"]), text_padding_id=kwargs["existing_text_padding_id"],
            max_period=kwargs.get("max_period", 10_000.0),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> LMConfig:
        """Read a JSON file of upstream LM arguments, or one whose "lm" entry holds them."""
        data = json.loads(Path(path).read_text())
        return cls.from_upstream(data.get("lm", data))

    @classmethod
    def personaplex_7b(cls) -> LMConfig:
        """nvidia/personaplex-7b-v1 (upstream `_lm_kwargs` with dep_q 16, as its loader sets)."""
        return cls(dim=4096, num_heads=32, num_layers=32, hidden_scale=4.125, context=3000, text_card=32000,
                   card=2048, n_q=16, dep_q=16, depformer_dim=1024, depformer_dim_feedforward=int(4.125 * 1024),
                   depformer_num_heads=16, depformer_num_layers=6, delays=PERSONAPLEX_DELAYS)

    @classmethod
    def tiny(cls) -> LMConfig:
        """The tiny configuration of the reference vectors (tests/data/personaplex-tiny/config.json)."""
        return cls(dim=32, num_heads=2, num_layers=2, hidden_scale=4.125, context=40, text_card=96, card=2048,
                   n_q=16, dep_q=16, depformer_dim=16, depformer_dim_feedforward=66, depformer_num_heads=2,
                   depformer_num_layers=2, delays=PERSONAPLEX_DELAYS)

    @property
    def num_streams(self) -> int:
        return self.n_q + 1

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def temporal(self) -> TransformerConfig:
        return TransformerConfig(dim=self.dim, num_heads=self.num_heads, num_layers=self.num_layers,
                                 dim_feedforward=int(self.hidden_scale * self.dim), context=self.context,
                                 norm="rms_norm_f32", gating="silu", max_period=self.max_period)

    @property
    def depth(self) -> TransformerConfig:
        return TransformerConfig(dim=self.depformer_dim, num_heads=self.depformer_num_heads,
                                 num_layers=self.depformer_num_layers, dim_feedforward=self.depformer_dim_feedforward,
                                 context=None, norm="rms_norm_f32", gating="silu", rope=False,
                                 weights_per_step=self.dep_q)


def embed_or_zero(embedding: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """Embed `tokens`, with NO_TOKEN giving a zero vector (upstream `ScaledEmbedding`)."""
    y = embedding(tokens.clamp(min=0))
    return torch.where((tokens == NO_TOKEN)[..., None], torch.zeros((), dtype=y.dtype, device=y.device), y)


class LM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        dim, dep_dim = config.dim, config.depformer_dim
        self.emb = nn.ModuleList(nn.Embedding(config.card + 1, dim) for _ in range(config.n_q))
        self.text_emb = nn.Embedding(config.text_card + 1, dim)
        self.transformer = Transformer(config.temporal)
        self.out_norm = RMSNorm(dim)
        self.text_linear = nn.Linear(dim, config.text_card, bias=False)
        self.depformer_in = nn.ModuleList(nn.Linear(dim, dep_dim, bias=False) for _ in range(config.dep_q))
        self.depformer_text_emb = nn.Embedding(config.text_card + 1, dep_dim)
        # The last codebook is never the input of a depformer step.
        self.depformer_emb = nn.ModuleList(nn.Embedding(config.card + 1, dep_dim) for _ in range(config.dep_q - 1))
        self.depformer = Transformer(config.depth)
        self.linears = nn.ModuleList(nn.Linear(dep_dim, config.card, bias=False) for _ in range(config.dep_q))

    def to_fp8_weights(self) -> None:
        """FP8 weights (per output channel scales) for the linear layers of the temporal and depth
        transformers, in place; embeddings, norms and the output heads keep their dtype."""
        self.transformer.to_fp8_weights()
        self.depformer.to_fp8_weights()

    @property
    def initial_token_ids(self) -> list[int]:
        """The tokens before the first frame, per stream (text_card for text, card for audio)."""
        cfg = self.config
        return [cfg.text_card] + [cfg.card] * cfg.n_q

    @property
    def initial_tokens(self) -> torch.Tensor:
        """`initial_token_ids` [num_streams] long, on the model's device."""
        return torch.tensor(self.initial_token_ids, device=self.text_linear.weight.device)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, num_streams, T] -> the temporal transformer's input [B, T, dim]."""
        x = embed_or_zero(self.emb[0], tokens[:, 1])
        for k in range(1, self.config.n_q):  # summed in upstream's order: audio, then text
            x = x + embed_or_zero(self.emb[k], tokens[:, k + 1])
        return x + embed_or_zero(self.text_emb, tokens[:, 0])

    def temporal(self, x: torch.Tensor, state: TransformerState) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, dim] after each row's earlier steps -> (hidden [B, T, dim], text logits [B, T, text_card])."""
        hidden = self.out_norm(self.transformer(x, state))
        return hidden, self.text_linear(hidden)

    def depformer_step(self, k: int, hidden: torch.Tensor, previous: torch.Tensor,
                       state: TransformerState) -> torch.Tensor:
        """Logits [B, card] of audio codebook k, from hidden [B, dim] and the token before it, previous [B].

        `previous` is the frame's text token for k = 0, else audio codebook k - 1. `state` holds this
        frame's depformer steps 0..k-1 (fresh for each frame).
        """
        token_emb = self.depformer_text_emb if k == 0 else self.depformer_emb[k - 1]
        x = self.depformer_in[k](hidden) + embed_or_zero(token_emb, previous)  # [B, depformer_dim]
        return self.linears[k](self.depformer(x[:, None], state, step=k)[:, 0])
