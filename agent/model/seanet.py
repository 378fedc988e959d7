"""SEANet: Mimi's convolutional encoder (audio -> latent frames) and decoder (latent frames -> audio).

Layers sit in `model`, an `nn.Sequential` indexed as upstream's, so the checkpoint's names line
up. The streaming state of an encoder or decoder is a flat list with one buffer per causal
convolution, in module order; `run_layers` hands each convolution the next buffer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from agent.model.conv import CausalConv1d, CausalConvTranspose1d


def run_layers(layers: nn.Sequential, x: torch.Tensor, buffers: Iterator[torch.Tensor]) -> torch.Tensor:
    for layer in layers:
        if isinstance(layer, (CausalConv1d, CausalConvTranspose1d)):
            x = layer(x, next(buffers))
        elif isinstance(layer, ResidualBlock):
            x = layer(x, buffers)
        else:
            x = layer(x)
    return x


def init_conv_buffers(module: nn.Module, batch_size: int, device=None, dtype=None) -> list[torch.Tensor]:
    """One fresh buffer per causal convolution of `module`, in the order `run_layers` uses them."""
    return [layer.init_state(batch_size, device, dtype) for layer in module.modules()
            if isinstance(layer, (CausalConv1d, CausalConvTranspose1d))]


class ResidualBlock(nn.Module):
    """x + (ELU, conv k, ELU, conv 1)(x), the inner width reduced by `compress`."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, compress: int):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(),
            CausalConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(),
            CausalConv1d(hidden, dim, 1),
        )

    def forward(self, x: torch.Tensor, buffers: Iterator[torch.Tensor]) -> torch.Tensor:
        return x + run_layers(self.block, x, buffers)


def residual_blocks(dim: int, count: int, kernel_size: int, dilation_base: int, compress: int) -> list[nn.Module]:
    return [ResidualBlock(dim, kernel_size, dilation_base**j, compress) for j in range(count)]


class SEANetEncoder(nn.Module):
    """[B, channels, T] audio -> [B, dimension, T / prod(ratios)] latent frames.

    `ratios` are given in decoder order (as upstream's config has them); the encoder downsamples
    by them in reverse.
    """

    def __init__(self, channels: int, dimension: int, n_filters: int, ratios: Sequence[int],
                 n_residual_layers: int, kernel_size: int, residual_kernel_size: int,
                 last_kernel_size: int, dilation_base: int, compress: int):
        super().__init__()
        layers: list[nn.Module] = [CausalConv1d(channels, n_filters, kernel_size)]
        width = n_filters
        for ratio in reversed(ratios):
            layers += residual_blocks(width, n_residual_layers, residual_kernel_size, dilation_base, compress)
            layers += [nn.ELU(), CausalConv1d(width, 2 * width, 2 * ratio, stride=ratio)]
            width *= 2
        layers += [nn.ELU(), CausalConv1d(width, dimension, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def init_state(self, batch_size: int, device=None, dtype=None) -> list[torch.Tensor]:
        return init_conv_buffers(self, batch_size, device, dtype)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        return run_layers(self.model, x, iter(state))


class SEANetDecoder(nn.Module):
    """[B, dimension, T] latent frames -> [B, channels, T * prod(ratios)] audio."""

    def __init__(self, channels: int, dimension: int, n_filters: int, ratios: Sequence[int],
                 n_residual_layers: int, kernel_size: int, residual_kernel_size: int,
                 last_kernel_size: int, dilation_base: int, compress: int):
        super().__init__()
        width = n_filters * 2 ** len(ratios)
        layers: list[nn.Module] = [CausalConv1d(dimension, width, kernel_size)]
        for ratio in ratios:
            layers += [nn.ELU(), CausalConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio)]
            width //= 2
            layers += residual_blocks(width, n_residual_layers, residual_kernel_size, dilation_base, compress)
        layers += [nn.ELU(), CausalConv1d(width, channels, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def init_state(self, batch_size: int, device=None, dtype=None) -> list[torch.Tensor]:
        return init_conv_buffers(self, batch_size, device, dtype)

    def forward(self, z: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        return run_layers(self.model, z, iter(state))
