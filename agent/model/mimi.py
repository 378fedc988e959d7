"""Mimi, the neural audio codec: 24 kHz audio <-> 8 codes per 80 ms frame (12.5 Hz).

encode: SEANet encoder (25 Hz latent) -> transformer -> downsample (12.5 Hz) -> quantizer -> codes
decode: codes -> dequantize -> upsample (25 Hz) -> transformer -> SEANet decoder -> audio

Streaming only, batch-first, with every bit of memory in explicit state objects whose rows are
independent streams: `init_encoder_state(B)`, `encode_step` one frame at a time, `reset(rows)`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn

from agent.model.conv import CausalConv1d, CausalConvTranspose1d
from agent.model.quantizer import SplitResidualVectorQuantizer
from agent.model.seanet import SEANetDecoder, SEANetEncoder
from agent.model.transformer import Transformer, TransformerConfig, TransformerState

CODEBOOK_EPSILON = 1e-5  # upstream's EuclideanCodebook: embedding = embedding_sum / cluster_usage.clamp(min=eps)


@dataclass(frozen=True)
class MimiConfig:
    dimension: int  # latent channels between SEANet and quantizer
    n_filters: int  # SEANet width at the audio end
    codebook_dim: int
    transformer: TransformerConfig
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder (upsampling) order; the encoder runs them reversed
    n_residual_layers: int = 1
    kernel_size: int = 7
    residual_kernel_size: int = 3
    last_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    channels: int = 1
    codebook_size: int = 2048
    total_codebooks: int = 32  # codebooks in the checkpoint
    num_codebooks: int = 8  # codebooks used: the first ones
    sample_rate: int = 24_000
    frame_rate: float = 12.5

    @property
    def hop_length(self) -> int:
        """Audio samples per SEANet latent frame."""
        return math.prod(self.ratios)

    @property
    def frame_size(self) -> int:
        """Audio samples per codec frame (1920)."""
        return int(self.sample_rate / self.frame_rate)

    @property
    def resample_stride(self) -> int:
        """SEANet latent frames per codec frame."""
        return self.frame_size // self.hop_length

    @classmethod
    def full(cls) -> MimiConfig:
        """The released codec (`tokenizer-e351c8d8-checkpoint125.safetensors`)."""
        return cls(dimension=512, n_filters=64, codebook_dim=256, transformer=_mimi_transformer(
            dim=512, num_heads=8, num_layers=8, dim_feedforward=2048, context=250))

    @classmethod
    def tiny(cls) -> MimiConfig:
        """The tiny configuration of the reference vectors (their config.json)."""
        return cls(dimension=32, n_filters=4, codebook_dim=16, total_codebooks=8, transformer=_mimi_transformer(
            dim=32, num_heads=2, num_layers=2, dim_feedforward=64, context=20))

    @classmethod
    def from_upstream(cls, kwargs: dict[str, Any]) -> MimiConfig:
        """From upstream's keyword arguments (the `mimi` section of the reference config.json)."""
        seanet, quantizer, tr = kwargs["seanet"], kwargs["quantizer"], kwargs["transformer"]
        dimension = seanet["dimension"]
        _require(seanet, causal=True, activation="ELU", norm="none", pad_mode="constant", true_skip=True)
        _require(quantizer, input_dimension=dimension, output_dimension=dimension)
        _require(tr, causal=True, conv_layout=True, positional_embedding="rope",
                 input_dimension=dimension, output_dimensions=[dimension])
        transformer = TransformerConfig(
            dim=tr["d_model"], num_heads=tr["num_heads"], num_layers=tr["num_layers"],
            dim_feedforward=tr["dim_feedforward"], context=tr["context"], norm=tr["norm"], gating=tr["gating"],
            layer_scale=tr["layer_scale"], max_period=float(tr["max_period"]))
        return cls(
            dimension=dimension, n_filters=seanet["n_filters"], codebook_dim=quantizer["dimension"],
            transformer=transformer, ratios=tuple(seanet["ratios"]),
            n_residual_layers=seanet["n_residual_layers"], kernel_size=seanet["kernel_size"],
            residual_kernel_size=seanet["residual_kernel_size"], last_kernel_size=seanet["last_kernel_size"],
            dilation_base=seanet["dilation_base"], compress=seanet["compress"], channels=seanet["channels"],
            codebook_size=quantizer["bins"], total_codebooks=quantizer["n_q"],
            num_codebooks=kwargs["num_codebooks"], sample_rate=kwargs["sample_rate"],
            frame_rate=kwargs["frame_rate"])


def _mimi_transformer(**sizes) -> TransformerConfig:
    return TransformerConfig(norm="layer_norm", gating="none", layer_scale=0.01, **sizes)


def _require(section: dict[str, Any], **expected) -> None:
    for key, value in expected.items():
        if section.get(key) != value:
            raise ValueError(f"Mimi supports only {key}={value!r}, the config has {section.get(key)!r}")


class ProjectedTransformer(nn.Module):
    """The transformer on [B, C, T] latents, with linear projections where C differs from its width."""

    def __init__(self, channels: int, config: TransformerConfig):
        super().__init__()
        self.transformer = Transformer(config)
        self.input_proj = nn.Linear(channels, config.dim, bias=False) if channels != config.dim else None
        output_proj = nn.Linear(config.dim, channels, bias=False) if channels != config.dim else nn.Identity()
        self.output_projs = nn.ModuleList([output_proj])

    def forward(self, x: torch.Tensor, state: TransformerState) -> torch.Tensor:
        x = x.transpose(1, 2)  # [B, T, C]
        if self.input_proj is not None:
            x = self.input_proj(x)
        x = self.transformer(x, state)
        return self.output_projs[0](x).transpose(1, 2)


def _zero_rows(buffers: list[torch.Tensor], rows: torch.Tensor) -> None:
    for buffer in buffers:
        buffer.masked_fill_(rows.view(-1, *[1] * (buffer.dim() - 1)), 0)


@dataclass
class MimiEncoderState:
    seanet: list[torch.Tensor]
    transformer: TransformerState
    downsample: torch.Tensor  # [B, dimension, carried]
    fresh: torch.Tensor  # [B] bool: rows yet to take their first frame (the downsample pads them by replication)

    def reset(self, rows: torch.Tensor) -> None:
        """Return the rows selected by the bool mask `rows` [B] to a fresh stream."""
        _zero_rows([*self.seanet, self.downsample], rows)
        self.transformer.reset(rows)
        self.fresh.logical_or_(rows)


@dataclass
class MimiDecoderState:
    upsample: torch.Tensor  # [B, dimension, overlap]
    transformer: TransformerState
    seanet: list[torch.Tensor]

    def reset(self, rows: torch.Tensor) -> None:
        """Return the rows selected by the bool mask `rows` [B] to a fresh stream."""
        _zero_rows([self.upsample, *self.seanet], rows)
        self.transformer.reset(rows)


class Mimi(nn.Module):
    def __init__(self, config: MimiConfig):
        super().__init__()
        self.config = config
        seanet = dict(channels=config.channels, dimension=config.dimension, n_filters=config.n_filters,
                      ratios=config.ratios, n_residual_layers=config.n_residual_layers,
                      kernel_size=config.kernel_size, residual_kernel_size=config.residual_kernel_size,
                      last_kernel_size=config.last_kernel_size, dilation_base=config.dilation_base,
                      compress=config.compress)
        dim, stride = config.dimension, config.resample_stride
        self.encoder = SEANetEncoder(**seanet)
        self.encoder_transformer = ProjectedTransformer(dim, config.transformer)
        self.downsample = CausalConv1d(dim, dim, 2 * stride, stride, bias=False, pad_mode="replicate")
        self.quantizer = SplitResidualVectorQuantizer(dim, config.codebook_dim, config.codebook_size,
                                                      config.num_codebooks)
        # Upstream's upsampling is channel-wise (groups=dim), a bug it keeps for its checkpoints.
        self.upsample = CausalConvTranspose1d(dim, dim, 2 * stride, stride, groups=dim, bias=False)
        self.decoder_transformer = ProjectedTransformer(dim, config.transformer)
        self.decoder = SEANetDecoder(**seanet)
        self.requires_grad_(False)

    def init_encoder_state(self, batch_size: int) -> MimiEncoderState:
        return MimiEncoderState(
            seanet=self.encoder.init_state(batch_size),
            transformer=self.encoder_transformer.transformer.init_state(batch_size),
            downsample=self.downsample.init_state(batch_size),
            fresh=torch.ones(batch_size, dtype=torch.bool, device=self.downsample.conv.weight.device),
        )

    def init_decoder_state(self, batch_size: int) -> MimiDecoderState:
        return MimiDecoderState(
            upsample=self.upsample.init_state(batch_size),
            transformer=self.decoder_transformer.transformer.init_state(batch_size),
            seanet=self.decoder.init_state(batch_size),
        )

    def encode_step(self, pcm: torch.Tensor, state: MimiEncoderState) -> torch.Tensor:
        """pcm [B, 1, frame_size] -> codes [B, num_codebooks, 1], continuing each row's stream."""
        if pcm.shape[-1] != self.config.frame_size:
            raise ValueError(f"encode_step takes one {self.config.frame_size}-sample frame, got {pcm.shape[-1]}")
        x = self.encoder(pcm, state.seanet)  # [B, D, resample_stride]
        x = self.encoder_transformer(x, state.transformer)
        x = self.downsample(x, state.downsample, state.fresh)  # [B, D, 1]
        state.fresh.zero_()
        return self.quantizer.encode(x)

    def decode_step(self, codes: torch.Tensor, state: MimiDecoderState) -> torch.Tensor:
        """codes [B, num_codebooks, 1] -> pcm [B, 1, frame_size], continuing each row's stream."""
        x = self.quantizer.decode(codes)  # [B, D, 1]
        x = self.upsample(x, state.upsample)  # [B, D, resample_stride]
        x = self.decoder_transformer(x, state.transformer)
        return self.decoder(x, state.seanet)

    def encode(self, pcm: torch.Tensor) -> torch.Tensor:
        """pcm [B, 1, T * frame_size] -> codes [B, num_codebooks, T]: T streaming steps from a fresh state.

        A loop of steps, not one pass: the transformer's ring and the convolutions must see the
        audio exactly as a live stream does for the codes to be the same.
        """
        frame_size = self.config.frame_size
        if pcm.shape[-1] % frame_size:
            raise ValueError(f"{pcm.shape[-1]} samples are not a whole number of {frame_size}-sample frames")
        state = self.init_encoder_state(pcm.shape[0])
        frames = pcm.split(frame_size, dim=-1)
        return torch.cat([self.encode_step(frame, state) for frame in frames], dim=-1)

    @classmethod
    def from_safetensors(cls, path: str | Path, config: MimiConfig, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> Mimi:
        """Load upstream's checkpoint (upstream tensor names; the first `num_codebooks` codebooks).

        Upstream runs Mimi in float32. In bfloat16 the nearest-centroid search loses precision
        and the codes drift from float32's, so keep float32 where codes must match.
        """
        model = cls(config)
        model.load_state_dict(state_dict_from_checkpoint(safetensors.torch.load_file(str(path)), model))
        return model.to(device=device, dtype=dtype)

    @classmethod
    def dummy(cls, config: MimiConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              seed: int = 0) -> Mimi:
        """Random weights (no checkpoint), the same for the same seed: for benchmarks and tests."""
        model = cls(config)
        generator = torch.Generator().manual_seed(seed)
        for name, tensor in model.state_dict().items():
            if tensor.dim() >= 2:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))
            elif name.endswith(".bias"):
                tensor.zero_()
        return model.to(device=device, dtype=dtype)


_CODEBOOK = re.compile(r"quantizer\.(rvq_first|rvq_rest)\.vq\.layers\.(\d+)\._codebook\.(\w+)")
_NESTED_CONV = re.compile(r"\b(conv|convtr)(\.\1)+\.")  # upstream's norm and resample wrappers


def state_dict_from_checkpoint(tensors: dict[str, torch.Tensor], model: Mimi) -> dict[str, torch.Tensor]:
    """Map upstream's tensor names onto `model`'s, raising on unknown or missing tensors.

    Upstream nests each convolution in wrappers (`conv.conv.weight`); here it is one level. Its
    codebooks are training statistics, turned into centroids as upstream does on first use:
    embedding_sum / cluster_usage.clamp(min=1e-5), in float32. Codebooks past the first
    `num_codebooks` of the checkpoint's `total_codebooks` are skipped.
    """
    config = model.config
    state: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    statistics: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        match = _CODEBOOK.fullmatch(name)
        if match is None:
            key = _NESTED_CONV.sub(r"\1.", name)
            state[key], sources[key] = tensor, name
            continue
        part, index, stat = match[1], int(match[2]), match[3]
        used, available = (1, 1) if part == "rvq_first" else (config.num_codebooks - 1, config.total_codebooks - 1)
        if used <= index < available or stat == "_initialized":
            continue
        key = f"quantizer.{part}.codebooks.{index}.embedding"
        statistics.setdefault(key, {})[stat] = tensor
        sources[key] = name
    for key, stats in statistics.items():
        if set(stats) != {"embedding_sum", "cluster_usage"}:
            raise ValueError(f"codebook tensors {sorted(stats)} at {sources[key]}: "
                             "expected embedding_sum and cluster_usage")
        usage = stats["cluster_usage"].float().clamp(min=CODEBOOK_EPSILON)
        state[key] = stats["embedding_sum"].float() / usage[:, None]
    expected = set(model.state_dict())
    unknown = sorted(sources[key] for key in state.keys() - expected)
    missing = sorted(expected - state.keys())
    if unknown or missing:
        raise ValueError(f"Mimi checkpoint does not match the config: unknown tensors {unknown}, "
                         f"missing tensors (plexline names) {missing}")
    return state
