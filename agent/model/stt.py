"""Kyutai's streaming speech-to-text (`kyutai/stt-1b-en_fr`, `kyutai/stt-2.6b-en`): Mimi codes in, text out.

The same family as PersonaPlex's LM, with no depth transformer: each step the model reads one
frame of 33 tokens (index 0 the text token it wrote the step before, 1..32 the caller's Mimi
codes of this frame, all 32 codebooks), sums their embeddings, runs the temporal transformer and
predicts the frame's text token. Every stream's delay is 0; the text lags the audio by itself,
as trained (`stt_config.audio_delay_seconds`: 0.5 s for 1b, 2.5 s for 2.6b), so a stream is
flushed with that much silence. The 1b model also has four "extra heads" of six classes over the
same hidden state: the semantic VAD (Kyutai's Unmute reads head 2's class 0 as the probability
that the speaker has finished a turn).

Greedy only: both released models are run at temperature 0 (their `lm_gen_config`). Parameter
names match the released checkpoint (`emb.{k}`, `text_emb`, `transformer.layers...`, `out_norm`,
`text_linear`, `extra_heads.{i}`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agent.model.lm import embed_or_zero
from agent.model.transformer import RMSNorm, Transformer, TransformerConfig, TransformerState

STT_CODEBOOKS = 32
FRAME_RATE = 12.5
# The extra head and class Kyutai's Unmute reads as the probability that the speaker has finished
# (its "pause prediction", thresholded at 0.6); the four heads look 0.5, 1, 2 and 3 s ahead.
PAUSE_HEAD, PAUSE_CLASS = 2, 0

# Upstream LM options this implementation hard-codes, with the only value it supports.
FIXED_UPSTREAM_OPTIONS = {
    "norm": "rms_norm_f32", "gating": "silu", "positional_embedding": "rope", "causal": True,
    "layer_scale": None, "norm_emb": False, "bias_proj": False, "dep_q": 0, "text_card_out": None,
    "demux_second_text_stream": False, "demux_second_stream": False, "fuser": None, "conditioners": None,
}


@dataclass(frozen=True)
class SttConfig:
    dim: int
    num_heads: int
    num_layers: int
    hidden_scale: float
    context: int
    text_card: int  # text vocabulary; the text embedding has one more row, the initial token
    card: int  # audio vocabulary; the audio embeddings have one more row, the initial token
    n_q: int  # caller codebooks read per frame
    max_period: float
    extra_heads: int  # heads of `extra_head_dim` classes (the semantic VAD); 0 for 2.6b
    extra_head_dim: int
    audio_delay_seconds: float  # the text's lag behind the audio (stt_config)
    audio_silence_prefix_seconds: float  # silence fed before a stream's audio (stt_config)
    text_padding_id: int = 3
    end_of_padding_id: int = 0  # the padding step just before a word starts

    @classmethod
    def from_upstream(cls, lm: dict[str, Any], stt: dict[str, Any]) -> SttConfig:
        """From upstream's LM keyword arguments (config.json, less its other keys) and its `stt_config`."""
        for name, value in FIXED_UPSTREAM_OPTIONS.items():
            if lm.get(name, value) not in (value, {}):
                raise ValueError(f"unsupported STT option {name}={lm[name]!r} (supported: {value!r})")
        if any(lm["delays"]):
            raise ValueError(f"unsupported STT delays {lm['delays']} (every stream's delay must be 0)")
        if len(lm["delays"]) != lm["n_q"] + 1:
            raise ValueError(f"{len(lm['delays'])} delays for {lm['n_q'] + 1} streams")
        return cls(
            dim=lm["dim"], num_heads=lm["num_heads"], num_layers=lm["num_layers"], hidden_scale=lm["hidden_scale"],
            context=lm["context"], text_card=lm["text_card"], card=lm["card"], n_q=lm["n_q"],
            max_period=float(lm.get("max_period", 10_000)), extra_heads=lm.get("extra_heads_num_heads", 0),
            extra_head_dim=lm.get("extra_heads_dim", 6), audio_delay_seconds=stt["audio_delay_seconds"],
            audio_silence_prefix_seconds=stt.get("audio_silence_prefix_seconds", 0.0),
            text_padding_id=lm.get("existing_text_padding_id", 3),
            end_of_padding_id=lm.get("existing_text_end_padding_id", 0),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> SttConfig:
        """The released config.json (LM arguments at the top), or one whose "lm" entry holds them."""
        data = json.loads(Path(path).read_text())
        return cls.from_upstream(data.get("lm", data), data["stt_config"])

    @classmethod
    def stt_1b_en_fr(cls) -> SttConfig:
        """kyutai/stt-1b-en_fr: 0.5 s behind the audio, with the semantic VAD heads."""
        return cls(dim=2048, num_heads=16, num_layers=16, hidden_scale=4.125, context=750, text_card=8000,
                   card=2048, n_q=STT_CODEBOOKS, max_period=100_000.0, extra_heads=4, extra_head_dim=6,
                   audio_delay_seconds=0.5, audio_silence_prefix_seconds=0.0)

    @classmethod
    def stt_2_6b_en(cls) -> SttConfig:
        """kyutai/stt-2.6b-en: 2.5 s behind the audio, no extra heads (sizes of transformers' port)."""
        return cls(dim=2048, num_heads=32, num_layers=48, hidden_scale=4.125, context=375, text_card=4000,
                   card=2048, n_q=STT_CODEBOOKS, max_period=100_000.0, extra_heads=0, extra_head_dim=6,
                   audio_delay_seconds=2.5, audio_silence_prefix_seconds=1.0)

    @classmethod
    def tiny(cls) -> SttConfig:
        """The tiny configuration of the reference vectors (tests/data/stt-tiny/config.json)."""
        return cls(dim=32, num_heads=2, num_layers=2, hidden_scale=4.125, context=20, text_card=96, card=128,
                   n_q=STT_CODEBOOKS, max_period=100_000.0, extra_heads=4, extra_head_dim=6,
                   audio_delay_seconds=0.5, audio_silence_prefix_seconds=0.16)

    @property
    def delay_frames(self) -> int:
        """Frames of silence that flush a stream's last words (upstream rounds up)."""
        return math.ceil(self.audio_delay_seconds * FRAME_RATE)

    @property
    def prefix_frames(self) -> int:
        return math.ceil(self.audio_silence_prefix_seconds * FRAME_RATE)

    def kv_bytes(self, dtype: torch.dtype) -> int:
        """Keys and values of one stream's full ring: 16 x 2 x 750 x 2048 x 2 B = 98 MB for 1b in bf16."""
        return self.num_layers * 2 * self.context * self.dim * torch.finfo(dtype).bits // 8

    @property
    def temporal(self) -> TransformerConfig:
        return TransformerConfig(dim=self.dim, num_heads=self.num_heads, num_layers=self.num_layers,
                                 dim_feedforward=int(self.hidden_scale * self.dim), context=self.context,
                                 norm="rms_norm_f32", gating="silu", max_period=self.max_period,
                                 ring_hides_oldest=False)


class SttLM(nn.Module):
    def __init__(self, config: SttConfig):
        super().__init__()
        self.config = config
        self.emb = nn.ModuleList(nn.Embedding(config.card + 1, config.dim) for _ in range(config.n_q))
        self.text_emb = nn.Embedding(config.text_card + 1, config.dim)
        self.transformer = Transformer(config.temporal)
        self.out_norm = RMSNorm(config.dim)
        self.text_linear = nn.Linear(config.dim, config.text_card, bias=False)
        self.extra_heads = nn.ModuleList(nn.Linear(config.dim, config.extra_head_dim, bias=False)
                                         for _ in range(config.extra_heads))

    def embed(self, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """text [B, T] and audio [B, n_q, T] -> the transformer's input [B, T, dim] (audio summed first)."""
        x = embed_or_zero(self.emb[0], audio[:, 0])
        for k in range(1, self.config.n_q):
            x = x + embed_or_zero(self.emb[k], audio[:, k])
        return x + embed_or_zero(self.text_emb, text)


@dataclass
class SttState:
    transformer: TransformerState
    text: torch.Tensor  # [B] long: each row's last text token, the next step's text input
    offsets: torch.Tensor  # [B] long: steps each row has taken

    def reset(self, rows: torch.Tensor) -> None:
        """Make the rows selected by the bool mask `rows` [B] new streams."""
        self.transformer.reset(rows)
        self.offsets.masked_fill_(rows, 0)


@dataclass
class SttStep:
    text: torch.Tensor  # [B] long: the text token of this frame (padding most of the time)
    heads: torch.Tensor  # [B, extra_heads, extra_head_dim] float32: each extra head's probabilities
    text_logits: torch.Tensor  # [B, text_card] float32


class StreamingStt:
    """Steps an `SttLM` over batched, independent rows, as upstream's `LMGen` does with every delay 0.

    A row's first step reads the initial tokens only (upstream drops the first frame's codes);
    each later step reads the text token of the step before and the frame's codes.
    """

    def __init__(self, model: SttLM):
        self.model = model
        cfg = model.config
        device = model.text_linear.weight.device
        self.initial_audio = torch.full((cfg.n_q,), cfg.card, dtype=torch.long, device=device)
        self.initial_text = torch.tensor(cfg.text_card, dtype=torch.long, device=device)

    def init_state(self, batch_size: int) -> SttState:
        device = self.initial_audio.device
        return SttState(transformer=self.model.transformer.init_state(batch_size),
                        text=torch.full((batch_size,), self.model.config.text_card, dtype=torch.long, device=device),
                        offsets=torch.zeros(batch_size, dtype=torch.long, device=device))

    @torch.no_grad()
    def step(self, state: SttState, codes: torch.Tensor) -> SttStep:
        """One frame for every row: codes [B, n_q] (a frame's first n_q codebooks; more are ignored)."""
        model = self.model
        first = state.offsets == 0
        audio = torch.where(first[:, None], self.initial_audio, codes[:, :model.config.n_q])
        text = torch.where(first, self.initial_text, state.text)
        hidden = model.out_norm(model.transformer(model.embed(text[:, None], audio[:, :, None]), state.transformer))
        hidden = hidden[:, 0]  # [B, dim]
        text_logits = model.text_linear(hidden).float()
        token = text_logits.argmax(dim=-1)
        if model.extra_heads:
            heads = torch.stack([head(hidden) for head in model.extra_heads], dim=1).float().softmax(dim=-1)
        else:
            heads = text_logits.new_zeros(codes.shape[0], 0, model.config.extra_head_dim)
        state.text.copy_(token)
        state.offsets.add_(1)
        return SttStep(text=token, heads=heads, text_logits=text_logits)
